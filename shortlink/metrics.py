"""Prometheus metrics that cost nothing on the request path.

The services keep plain integer counters where the work happens (the cache's
hits, the publisher's published events, ...). Nothing is formatted, locked or
labelled per request: a collector turns those numbers into metric families only
when Prometheus scrapes. Histograms are `Buckets`: a list of counts and a
bisect, no lock (each process is single-threaded asyncio).

A redirect or API server runs several worker processes sharing one port, so a
scrape of that port would reach a random worker. Instead each worker writes its
metrics (text format) to `<dir>/<worker>.prom` once a second, and the
supervisor serves their sum on a separate metrics port (REDIRECT_METRICS_PORT,
API_METRICS_PORT), which also keeps /metrics off the internet-facing port.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from shortlink.exceptions import ConfigError

log = logging.getLogger(__name__)

METRICS_DIR_VARIABLE = "SHORTLINK_METRICS_DIR"  # set by the supervisor for its workers
WRITE_INTERVAL = 1.0
# Seconds: lookups take ~0.5 ms, deliveries up to the 10 s timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Buckets:
    """A histogram's counts, without a lock: observe() is a bisect and two additions."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str] = ()) -> None:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric(list(labels), cumulative, self.sum)


class Snapshot(Collector):
    """A collector whose families come from a function, called at scrape time."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def registry_of(families: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# -- worker side ----------------------------------------------------------------


def writer_context(
    registry_key: web.AppKey[CollectorRegistry], worker_index: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Write the worker's metrics to the supervisor's directory every second."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        directory = os.environ.get(METRICS_DIR_VARIABLE)
        if not directory:
            yield  # not under a supervisor that serves metrics (tests, metrics off)
            return
        path = Path(directory) / f"{worker_index}.prom"

        def write() -> None:
            staged = path.with_suffix(".tmp")
            staged.write_bytes(render(app[registry_key]))
            staged.replace(path)  # a scrape never reads half a file

        async def loop() -> None:
            while True:
                try:
                    write()
                except OSError as exc:
                    log.warning("could not write metrics", extra={"error": repr(exc)})
                await asyncio.sleep(WRITE_INTERVAL)

        task = asyncio.create_task(loop(), name="metrics-writer")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            write()  # the final counts

    return context


# -- supervisor side ------------------------------------------------------------


class WorkerFiles(Collector):
    """The sum over the workers' files: counters, gauges and histogram buckets add up."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for path in sorted(self._directory.glob("*.prom")):
            try:
                text = path.read_text()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    sums[family.name] = {}
                totals = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
        for name, family in families.items():
            for (sample_name, labels), value in sums[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def serve_worker_metrics(host: str, port: int, setting: str) -> Path | None:
    """In the supervisor: a metrics directory for the workers (through the
    environment they inherit) and an HTTP server summing it; None if port is 0."""
    if port == 0:
        return None
    directory = Path(tempfile.mkdtemp(prefix="shortlink-metrics-"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerFiles(directory))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
            f"choose another {setting}, or 0 for no metrics"
        ) from None
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[METRICS_DIR_VARIABLE] = str(directory)
    log.info("metrics", extra={"url": f"http://{host}:{port}/metrics"})
    return directory
