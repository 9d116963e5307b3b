"""The API application: routes, middlewares (errors, then auth) and resources."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from importlib import resources

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from shortlink import endpoints, health, metrics, validation
from shortlink.api import (
    account,
    apikeys,
    audit,
    campaigns,
    conversions,
    destinations,
    domains,
    erasures,
    forwarding,
    links,
    messages,
)
from shortlink.api.auth import PRIMARY_AWAY, PrimaryAway, add_rate_limit_headers, auth_middleware
from shortlink.api.campaign_list import list_campaigns
from shortlink.api.config import ApiConfig
from shortlink.api.dashboard import routes as dashboard
from shortlink.api.errors import HTTP_LOG, Handler, error_middleware
from shortlink.api.exports import clicks_csv, recipients_csv
from shortlink.api.keys import API_CONFIG, RESOLVER
from shortlink.pool import POOL, pool_context, read_pool_context
from shortlink.supervise import SUPERVISOR, supervisor_context

OPENAPI = web.AppKey("openapi", bytes)
TARGET_SCHEMAS = ("CreateLinks", "PatchLink")  # whose `url` is a target (not on SHORT_DOMAIN)
METRICS = web.AppKey("api_metrics", CollectorRegistry)
# By (method, route pattern, status): bounded, since unknown paths share one pattern.
RESPONSES = web.AppKey("api_responses", Counter[tuple[str, str, int]])
LATENCY = web.AppKey("api_latency", dict[str, metrics.Buckets])


def openapi_document() -> bytes:
    """The OpenAPI 3 contract, as kept in the repository (shortlink/api/openapi.json)."""
    return (resources.files("shortlink") / "api" / "openapi.json").read_bytes()


def served_document(config: ApiConfig) -> bytes:
    """The contract as this API serves it: the repository's document, with the one rule
    that depends on configuration stated as a schema too: a target URL is not on
    SHORT_DOMAIN's host and port (a `not` pattern on the links' `url`)."""
    document = orjson.loads(openapi_document())
    pattern = validation.short_domain_pattern(config.short_domain)
    if pattern is not None:
        schemas = document["components"]["schemas"]
        for name in TARGET_SCHEMAS:
            schemas[name]["properties"]["url"]["not"] = {"type": "string", "pattern": pattern}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def create_app(config: ApiConfig, *, worker_index: int = 0) -> web.Application:
    """The API; no I/O until it starts."""
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, dashboard.middleware, auth_middleware],
        client_max_size=config.max_request_bytes,
        handler_args={"logger": HTTP_LOG},
    )
    app[API_CONFIG] = config
    app[PRIMARY_AWAY] = PrimaryAway()
    app[RESOLVER] = endpoints.SYSTEM_RESOLVER
    app[OPENAPI] = served_document(config)
    app.cleanup_ctx.append(supervisor_context("shortlink_api"))
    app.cleanup_ctx.append(pool_context(config.service))
    app.cleanup_ctx.append(read_pool_context(config.service))
    app.cleanup_ctx.append(erasures.job_context)
    app.on_response_prepare.append(add_rate_limit_headers)
    app[RESPONSES] = Counter()
    app[LATENCY] = {}
    app[METRICS] = metrics.registry_of(lambda: _families(app))
    app.cleanup_ctx.append(metrics.writer_context(METRICS, worker_index))
    add = app.router.add_route
    add("GET", "/healthz", health.healthz)
    add("GET", "/readyz", readyz)
    add("GET", "/v1/openapi.json", openapi)
    add("POST", "/v1/links", links.create)
    add("GET", "/v1/links", links.by_client_ref)
    add("GET", "/v1/links/{token}", links.get)
    add("PATCH", "/v1/links/{token}", links.patch)
    add("DELETE", "/v1/links/{token}", links.delete)
    add("POST", "/v1/messages", messages.create)
    add("POST", "/v1/conversions", conversions.create)
    add("GET", "/v1/campaigns/{client_identifier}/stats", campaigns.get_stats)
    add("GET", "/v1/campaigns/{client_identifier}/clicks", campaigns.list_clicks)
    add("GET", "/v1/campaigns", list_campaigns)
    add("GET", "/v1/campaigns/{client_identifier}/clicks.csv", clicks_csv)
    add("GET", "/v1/campaigns/{client_identifier}/recipients.csv", recipients_csv)
    add("GET", "/v1/account", account.get)
    add("PATCH", "/v1/account", account.patch)
    add("POST", "/v1/erasures", erasures.create)
    add("GET", "/v1/erasures/{erasure_id}", erasures.get)
    add("GET", "/v1/endpoint", forwarding.get_endpoint)
    add("PUT", "/v1/endpoint", forwarding.put_endpoint)
    add("GET", "/v1/deliveries", forwarding.list_deliveries)
    add("POST", "/v1/deliveries/{request_identifier}/retry", forwarding.retry)
    add("GET", "/v1/keys", apikeys.list_keys)
    add("POST", "/v1/keys", apikeys.create)
    add("DELETE", "/v1/keys/{key_id}", apikeys.delete)
    add("POST", "/v1/keys/{key_id}/rotate", apikeys.rotate)
    add("GET", "/v1/audit", audit.list_entries)
    add("PATCH", "/v1/campaigns/{client_identifier}", destinations.retarget)
    add("POST", "/v1/domains", domains.create)
    add("GET", "/v1/domains", domains.list_domains)
    add("GET", "/v1/domains/{domain}", domains.get)
    add("PATCH", "/v1/domains/{domain}", domains.patch)
    add("DELETE", "/v1/domains/{domain}", domains.delete)
    add("POST", "/v1/domains/{domain}/verify", domains.verify)
    dashboard.setup(app, config)
    return app


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route and status, and time it per route."""
    started = time.perf_counter()
    response = await handler(request)  # the error middleware turns failures into answers
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "(unmatched)"
    request.app[RESPONSES][request.method, route, response.status] += 1
    latency = request.app[LATENCY]
    if route not in latency:
        latency[route] = metrics.Buckets(metrics.DELIVERY_BUCKETS)
    latency[route].observe(time.perf_counter() - started)
    return response


def _families(app: web.Application) -> Iterator[Metric]:
    yield app[SUPERVISOR].restarts_metric()
    responses = CounterMetricFamily(
        "shortlink_api_responses", "API answers", labels=["method", "route", "status"]
    )
    for (method, route, status), count in sorted(app[RESPONSES].items()):
        responses.add_metric([method, route, str(status)], count)
    yield responses
    seconds = HistogramMetricFamily(
        "shortlink_api_request_seconds", "Time to answer, by route", labels=["route"]
    )
    for route, buckets in sorted(app[LATENCY].items()):
        buckets.add_to(seconds, [route])
    yield seconds


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers."""
    database = await health.database_reachable(request.app[POOL])
    return health.answer({"database": health.state(database)}, database)
