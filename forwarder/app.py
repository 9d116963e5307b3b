"""The forwarder process: its resources in dependency order, and a small HTTP face.

Resources are cleanup contexts: the database pool, the HTTP client session, the
delivery loop, then the consume-and-record loop (so at shutdown the consumer
stops first and deliveries in flight get to finish). The HTTP side answers
/healthz and /readyz for the orchestrator and /metrics for Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from forwarder.config import ForwarderConfig
from forwarder.delivery import HTTP_SESSION, Deliverer, session_context
from forwarder.recorder import Recorder
from shortlink import health, metrics
from shortlink.geoip import PACKAGED, Locator
from shortlink.pool import POOL, pool_context
from shortlink.purge import PURGE, purge_context
from shortlink.supervise import SUPERVISOR, supervisor_context

log = logging.getLogger(__name__)

CONFIG = web.AppKey("forwarder_config", ForwarderConfig)
DELIVERER = web.AppKey("deliverer", Deliverer)
RECORDER = web.AppKey("recorder", Recorder)


def create_app(config: ForwarderConfig) -> web.Application:
    """The forwarder's application; no I/O until it starts."""
    app = web.Application()
    app[CONFIG] = config
    app.cleanup_ctx.append(supervisor_context("forwarder"))
    # PostgreSQL's own choice of plans (plan_cache_mode auto): the recorder writes the
    # links partitions it reads into its statements (forwarder.recorder._periods), so a
    # kept plan reads only those; planning every execution instead cost ~2 us a click.
    # No reset on release (stateless): the deliverer releases a connection a few times a
    # delivery; the purge job, the only user that sets session state, resets its own.
    app.cleanup_ctx.append(pool_context(config.service, stateless=True))
    app.cleanup_ctx.append(session_context(config))
    app.cleanup_ctx.append(_deliverer_context(config))
    app.cleanup_ctx.append(_recorder_context(config))
    app.cleanup_ctx.append(purge_context(config.retention))
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


def _deliverer_context(config: ForwarderConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        deliverer = Deliverer(config, app[POOL], app[HTTP_SESSION], supervisor=app[SUPERVISOR])
        app[DELIVERER] = deliverer
        task = app[SUPERVISOR].spawn("deliverer", deliverer.run)
        yield
        await task.stop(config.shutdown_timeout)
        log.info("stopped", extra={"task": "deliverer"})

    return context


def _recorder_context(config: ForwarderConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        locator = Locator(config.geoip_database) if config.geoip_database else PACKAGED
        log.info(
            "IP places from",
            extra={"geoip_database": str(config.geoip_database or "packaged country data")},
        )
        recorder = Recorder(config, app[POOL], app[DELIVERER].wake, locator)
        app[RECORDER] = recorder
        task = app[SUPERVISOR].spawn("recorder", recorder.run)
        yield
        await task.stop(config.shutdown_timeout)
        if locator is not PACKAGED:
            locator.close()
        log.info("stopped", extra={"task": "recorder"})

    return context


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and the Kafka consumer has started."""
    database = await health.database_reachable(request.app[POOL])
    consuming = request.app[RECORDER].consumer is not None
    body = {"database": health.state(database), "consumer": health.state(consuming, "not started")}
    return health.answer(body, database and consuming)


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus metrics: the loops' counters, plus two counts from the database."""
    app = request.app
    queued: dict[str, int] = {}
    try:
        async with asyncio.timeout(2.0):
            row = await app[POOL].fetchrow(
                """
                SELECT count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS retrying,
                       count(*) FILTER (WHERE status = 'dead') AS dead
                FROM deliveries WHERE status IN ('pending', 'dead')
                """
            )
        if row is not None:
            queued = {"retrying": row["retrying"], "dead": row["dead"]}
    except Exception as exc:  # noqa: BLE001 - the other metrics are still worth answering
        log.warning("metrics: delivery counts unavailable", extra={"error": repr(exc)})
    registry = metrics.registry_of(lambda: _families(app, queued))
    return web.Response(
        body=metrics.render(registry),
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _families(app: web.Application, queued: dict[str, int]) -> list[Metric]:
    recorder, deliverer = app[RECORDER], app[DELIVERER]
    totals = recorder.totals
    found: list[Metric] = [app[SUPERVISOR].restarts_metric()]
    partitions = recorder.partitions()
    if partitions is not None:
        found.append(
            metrics.gauge(
                "forwarder_partitions", "Click topic partitions this process consumes", partitions
            )
        )
    lag = recorder.lag()
    if lag is not None:
        found.append(
            metrics.gauge("forwarder_consumer_lag", "Click events on Kafka not yet recorded", lag)
        )
    found += [
        metrics.counter("forwarder_events_received", "Click events consumed", totals.received),
        metrics.counter(
            "forwarder_clicks_recorded", "Clicks inserted (once each)", totals.recorded
        ),
        metrics.counter(
            "forwarder_duplicate_events", "Replayed events already recorded", totals.duplicates
        ),
        metrics.counter("forwarder_bot_clicks", "Clicks flagged as bots or previews", totals.bots),
        metrics.counter(
            "forwarder_first_clicks", "Links clicked for the first time", totals.first_clicks
        ),
        metrics.counter(
            "forwarder_invalid_events", "Messages that were not click events", recorder.invalid
        ),
        metrics.counter(
            "forwarder_dead_events",
            "Click events that could not be recorded, kept in dead_events",
            recorder.dead,
        ),
        metrics.counter(
            "forwarder_isolated_batches",
            "Batches split to find the events that made them fail",
            recorder.isolations,
        ),
        metrics.counter(
            "forwarder_record_transactions",
            "Transactions that recorded consumed click events (events received / this ="
            " events per transaction)",
            recorder.batches,
        ),
        metrics.counter(
            "forwarder_batches_made", "Delivery batches enqueued", deliverer.batches_made
        ),
    ]
    holes = CounterMetricFamily(
        "forwarder_offset_holes",
        "Click topic offsets the broker served out of order: holes that filled while the"
        " records after them were held back, and offsets stepped over after waiting",
        labels=["outcome"],
    )
    holes.add_metric(["filled"], recorder.holes.filled)
    holes.add_metric(["skipped"], recorder.holes.skipped)
    found.append(holes)
    job = app[PURGE]
    found.append(metrics.counter("forwarder_purge_runs", "Runs of the purge job", job.runs))
    purged = CounterMetricFamily(
        "forwarder_purged_rows", "Rows the purge removed, by table", labels=["table"]
    )
    for table, rows in sorted(job.removed.items()):
        purged.add_metric([table], rows)
    found.append(purged)
    results = CounterMetricFamily(
        "forwarder_delivery_attempts", "POSTs to customer endpoints, by result", labels=["result"]
    )
    results.add_metric(["delivered"], deliverer.delivered)
    results.add_metric(["failed"], deliverer.failed)
    results.add_metric(["dead"], deliverer.dead)
    found.append(results)
    if queued:
        found.append(
            metrics.gauge(
                "forwarder_retry_queue", "Deliveries waiting to be retried", queued["retrying"]
            )
        )
        found.append(
            metrics.gauge("forwarder_dead_letters", "Deliveries that gave up", queued["dead"])
        )
    latency = HistogramMetricFamily(
        "forwarder_delivery_seconds", "POST duration by endpoint id", labels=["endpoint"]
    )
    for endpoint, buckets in sorted(deliverer.latency.items()):
        buckets.add_to(latency, [endpoint])
    found.append(latency)
    return found
