"""The redirect server: GET /{token} answers a redirect at once and queues the click.

Requests reach `make_handler`'s function through aiohttp's low-level server (no
router, no middleware: measured ~20% more redirects per second). The
web.Application is still the unit of lifecycle: each resource is a cleanup
context in the module that owns it, registered in dependency order.

On a cache hit the handler does no I/O before returning its response: one dict
lookup, a clock read, one list append (the click, for the publisher), and the
response object, whose head is joined from bytes kept ready (shortlink.redirect.response).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator

import asyncpg
from aiohttp import HttpVersion11, web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from shortlink import health, logs, metrics
from shortlink.clientip import forwarded_for, resolver
from shortlink.pool import POOL, pool_context
from shortlink.redirect import pages
from shortlink.redirect.cache import CACHE, cache_context
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.domains import SHORT, Served
from shortlink.redirect.entries import LinkGroup
from shortlink.redirect.listener import LISTENER, listener_context
from shortlink.redirect.publisher import PUBLISHER, publisher_context
from shortlink.redirect.response import CACHE_CONTROL, Heads, Redirect, encodable
from shortlink.redirect.scanners import ScanGuard
from shortlink.redirect.tlsask import ask_context
from shortlink.rules import choose
from shortlink.serve import HTTP_LOG, Handler
from shortlink.supervise import SUPERVISOR, supervisor_context
from shortlink.tokens import is_token

log = logging.getLogger(__name__)

CONFIG = web.AppKey("redirect_config", RedirectConfig)
METRICS = web.AppKey("redirect_metrics", CollectorRegistry)
# Answers other than the redirect itself, by status (the redirects are the
# publisher's submitted clicks: nothing is counted twice on the hot path).
STATUSES = web.AppKey("redirect_statuses", Counter[int])
SCANS = web.AppKey("redirect_scan_guard", ScanGuard)

_JSON = "application/json"
_LOOKUP_ERRORS = (asyncpg.PostgresError, OSError, TimeoutError)
_HEALTHZ = "healthz"  # liveness: the process answers
_READYZ = "readyz"  # readiness: the database and the broker answer too


def create_app(config: RedirectConfig, *, worker_index: int = 0) -> web.Application:
    """The redirect worker's application: resources only, no I/O until startup."""
    app = web.Application()
    app[CONFIG] = config
    app.cleanup_ctx.append(supervisor_context("shortlink_redirect"))
    lookups = max(1, config.service.database_pool_size // 2)
    # Connections open from the start: a burst of cold taps does not wait for connects.
    app.cleanup_ctx.append(pool_context(config.service, min_size=lookups + 2, stateless=True))
    app.cleanup_ctx.append(publisher_context(config, worker_index))
    app.cleanup_ctx.append(
        cache_context(
            max_entries=config.cache_entries,
            negative_max_entries=config.negative_cache_entries,
            negative_ttl=config.negative_cache_ttl,
            max_in_flight=lookups,
        )
    )
    app.cleanup_ctx.append(listener_context(config))
    app.cleanup_ctx.append(ask_context(config))
    app[STATUSES] = Counter()
    app[SCANS] = ScanGuard(config.scan_limit_per_minute)
    app[METRICS] = metrics.registry_of(lambda: _families(app))
    app.cleanup_ctx.append(metrics.writer_context(METRICS, worker_index))
    return app


def _families(app: web.Application) -> Iterator[Metric]:
    """The worker's counters as Prometheus metrics (called at scrape time only)."""
    config, cache, publisher = app[CONFIG], app[CACHE], app[PUBLISHER]
    yield app[SUPERVISOR].restarts_metric()
    redirects = CounterMetricFamily(
        "shortlink_redirect_responses", "Answers to GET/HEAD /{token}, by status", labels=["status"]
    )
    # Redirects to an expired link's place are counted in STATUSES, maybe as the same status.
    statuses: Counter[int] = app[STATUSES]
    answers = statuses.copy()
    answers[config.redirect_status] += publisher.submitted
    for status, count in sorted(answers.items()):
        redirects.add_metric([str(status)], count)
    yield redirects
    listener = app[LISTENER]
    yield metrics.counter("shortlink_link_cache_hits", "Tokens found in the cache", cache.hits)
    yield metrics.counter(
        "shortlink_link_cache_misses",
        "Tokens not in the cache (negative hits included)",
        cache.misses,
    )
    yield metrics.counter(
        "shortlink_link_cache_negative_hits",
        "Unknown tokens answered from the negative cache",
        cache.negative_hits,
    )
    yield metrics.counter(
        "shortlink_link_lookup_errors", "Lookup queries that failed", cache.load_errors
    )
    yield metrics.counter(
        "shortlink_link_lookups", "Lookup queries of missed tokens (batched)", cache.loads
    )
    yield metrics.counter(
        "shortlink_link_lookup_tokens", "Missed tokens asked for by lookup queries", cache.looked_up
    )
    yield metrics.counter(
        "shortlink_link_cache_warmed", "Links read into the cache ahead of a tap", cache.warmed
    )
    yield metrics.counter(
        "shortlink_link_cache_evicted", "Links dropped to make room", cache.evicted
    )
    yield metrics.counter(
        "shortlink_link_invalidations", "Changed links dropped from the cache", listener.invalidated
    )
    yield metrics.counter(
        "shortlink_link_listener_reconnects",
        "Times the link-changes connection was made again",
        listener.reconnects,
    )
    yield metrics.counter(
        "shortlink_scan_refusals",
        "Unknown tokens answered 429: their address asked for too many this minute",
        app[SCANS].refused,
    )
    yield metrics.gauge("shortlink_link_cache_entries", "Links in the cache", len(cache))
    yield metrics.gauge("shortlink_link_cache_groups", "Shared link groups", len(cache.groups))
    lookups = HistogramMetricFamily(
        "shortlink_link_lookup_seconds", "Lookup queries of tokens missing from the cache"
    )
    cache.load_seconds.add_to(lookups)
    yield lookups
    warm = HistogramMetricFamily(
        "shortlink_link_warm_seconds", "From a created-links notification to the links cached"
    )
    listener.warm_seconds.add_to(warm)
    yield warm
    yield metrics.gauge(
        "shortlink_publish_buffer_clicks",
        "Clicks waiting for the next Kafka send",
        publisher.buffered,
    )
    yield metrics.gauge(
        "shortlink_spool_bytes",
        "Clicks spooled to disk while Kafka is unreachable",
        publisher.spool_bytes,
    )
    yield metrics.counter(
        "shortlink_events_published", "Click events acknowledged by Kafka", publisher.published
    )
    yield metrics.counter(
        "shortlink_events_spooled",
        "Click events written to the spool after a failed send",
        publisher.spooled,
    )
    yield metrics.counter(
        "shortlink_events_dropped",
        "Click events lost: spool full or not writable",
        publisher.dropped + publisher.lost,
    )
    yield metrics.counter(
        "shortlink_publish_failures", "Failed Kafka sends", publisher.send_failures
    )
    yield metrics.counter(
        "shortlink_journal_recovered",
        "Clicks a killed worker left in its journal, moved to the spool at start",
        publisher.recovered,
    )
    yield metrics.counter(
        "shortlink_journal_full",
        "Clicks spooled at once because the journal had no room",
        publisher.journal_full,
    )
    yield metrics.counter(
        "shortlink_redirect_malformed_requests",
        "Requests that were not HTTP aiohttp could parse (answered 400 by aiohttp)",
        logs.malformed_requests(HTTP_LOG),
    )


def make_handler(app: web.Application) -> Handler:
    """The request handler, bound to the started app's cache, publisher and pool."""
    config = app[CONFIG]
    cache = app[CACHE]
    publisher = app[PUBLISHER]
    pool = app[POOL]
    cache_get = cache.get
    cache_lookup = cache.lookup
    groups = cache.groups.items  # the same list for the cache's lifetime
    submit = publisher.submit
    clock = time.time
    client_ip = resolver(config.trusted_proxies)
    behind_proxies = bool(config.trusted_proxies)
    redirect_status = config.redirect_status
    statuses = app[STATUSES]
    supervisor = app[SUPERVISOR]
    listener = app[LISTENER]
    expired_places = listener.places.urls  # the same dict for the listener's lifetime
    branded = listener.hosts.domains  # the same dict too: the verified branded domains
    served = listener.hosts.served
    StreamResponse = web.StreamResponse  # a local is a cheaper lookup on the hot path
    head = Heads(redirect_status).head
    scans = app[SCANS]

    def page(status: int, body: bytes) -> web.Response:
        statuses[status] += 1
        return _page(status, body)

    def unavailable() -> web.Response:
        response = page(503, pages.UNAVAILABLE)
        response.headers["Retry-After"] = "1"
        return response

    def counted(response: web.StreamResponse) -> web.StreamResponse:
        statuses[response.status] += 1
        return response

    def respond(
        request: web.BaseRequest, token: str, group: LinkGroup, packed: bytes
    ) -> web.StreamResponse:
        # A link answers on its own domain only: a branded link on that domain while its
        # account holds it, a SHORT_DOMAIN link on SHORT's hosts (shortlink.redirect.domains).
        # Elsewhere it is as unknown as a token that does not exist.
        host = served(request.headers.get("Host"))
        if host is SHORT:
            if group.domain is not None:
                return unknown(request)
        elif host is None or host.name != group.domain or host.account_id != group.account_id:
            return unknown(request)
        method = request.method
        if method != "GET" and method != "HEAD":
            return counted(_method_not_allowed())
        now = clock()
        if group.special or now >= group.expires_at:
            return special(request, token, group, packed, now)
        return redirect(request, token, group, packed, now, method, False)

    def redirect(
        request: web.BaseRequest,
        token: str,
        group: LinkGroup,
        packed: bytes,
        now: float,
        method: str,
        warning: bool,
    ) -> web.StreamResponse:
        """Queue the click, answer the redirect. Nothing here waits for anything."""
        headers = request.headers
        peer = request.remote
        submit(
            token,
            group,
            packed,
            now,
            headers.get("User-Agent"),
            client_ip(peer, forwarded_for(headers)) if behind_proxies else peer,
            headers.get("Referer"),
            method,
            warning,
        )
        location = group.location or group.location_bytes()
        if location and request.version == HttpVersion11 and request.keep_alive:
            # The common case: the head from bytes kept ready, the same bytes as below.
            return Redirect(redirect_status, head(location, now))
        # A StreamResponse without a body: the same bytes on the wire as
        # web.Response, for ~5% fewer instructions per redirect (callgrind).
        response = StreamResponse(
            status=redirect_status,
            headers={"Location": group.target_url, "Cache-Control": CACHE_CONTROL},
        )
        response.content_length = 0
        return response

    def special(
        request: web.BaseRequest, token: str, group: LinkGroup, packed: bytes, now: float
    ) -> web.StreamResponse:
        if group.disabled:
            return page(410, pages.DISABLED)
        if now >= group.expires_at:
            place = group.expired_url or expired_places.get(group.account_id)
            if group.domain is not None and group.expired_url is None:
                domain = branded.get(group.domain)
                if domain is not None and domain.expired_url is not None:
                    place = domain.expired_url
            if place is not None and encodable(place) is not None:
                # Not a click of the link: nothing is published.
                response = StreamResponse(
                    status=302, headers={"Location": place, "Cache-Control": CACHE_CONTROL}
                )
                response.content_length = 0
                return counted(response)
            return page(410, pages.EXPIRED)
        plain = group.rules is None and group.variant is None
        index = None if plain else chosen(request, group, now)
        warning = False
        if group.unsafe:
            # The warning page first, naming where "continue" leads (the rule's URL if one
            # matches); its "continue" link leads here with the parameter.
            if request.query.get(pages.CONTINUE_PARAMETER) != "1":
                rules = group.compiled
                shown = (
                    group.target_url if rules is None or index is None else rules.rules[index].url
                )
                return page(200, pages.warning_page(token, shown))
            warning = True
        if plain:
            return redirect(request, token, group, packed, now, request.method, warning)
        return smart(request, token, group, packed, now, warning, index)

    def chosen(request: web.BaseRequest, group: LinkGroup, now: float) -> int | None:
        """The index of the rule this request matches (shortlink.rules.choose), or None."""
        rules = group.compiled
        if rules is None:
            return None
        headers = request.headers
        peer = request.remote
        address = client_ip(peer, forwarded_for(headers)) if behind_proxies else peer
        return choose(
            rules,
            headers.get("User-Agent"),
            address,
            headers.get("Accept-Language"),
            request.method,
            now,
        )

    def smart(
        request: web.BaseRequest,
        token: str,
        group: LinkGroup,
        packed: bytes,
        now: float,
        warning: bool,
        index: int | None,
    ) -> web.StreamResponse:
        """A link with rules or variants: the first matching rule's URL, else the link's."""
        headers = request.headers
        peer = request.remote
        method = request.method
        agent = headers.get("User-Agent")
        address = client_ip(peer, forwarded_for(headers)) if behind_proxies else peer
        rules = group.compiled
        if rules is None or index is None:
            destination, location = group.target_url, group.location or group.location_bytes()
        else:
            rule = rules.rules[index]
            destination, location = rule.url, rule.location or b""
        submit(
            token,
            group,
            packed,
            now,
            agent,
            address,
            headers.get("Referer"),
            method,
            warning,
            (destination, index, group.variant),
        )
        if location and request.version == HttpVersion11 and request.keep_alive:
            return Redirect(redirect_status, head(location, now))
        response = StreamResponse(
            status=redirect_status,
            headers={"Location": destination, "Cache-Control": CACHE_CONTROL},
        )
        response.content_length = 0
        return response

    async def miss(request: web.BaseRequest, token: str) -> web.StreamResponse:
        try:
            found = await cache_lookup(token)
        except _LOOKUP_ERRORS as exc:
            log.warning("link lookup failed", extra={"error": repr(exc)})
            return unavailable()
        except Exception:  # never a 500 for a phone: a bug here is logged and counted
            log.exception("link lookup failed unexpectedly")
            supervisor.recovered("link-lookup")
            return unavailable()
        if found is None:
            return unknown(request)
        return respond(request, token, *found)

    def unknown(request: web.BaseRequest) -> web.StreamResponse:
        """404 (or the branded domain's not_found_url), or 429 when the address has asked
        for too many unknown tokens this minute."""
        peer = request.remote or ""
        address = client_ip(peer, forwarded_for(request.headers)) if behind_proxies else peer
        wait = scans.unknown(address or "")
        if wait is None:
            host = served(request.headers.get("Host")) if branded else None
            if host is not None and host.not_found_url is not None:
                return counted(_found(host.not_found_url))
            return page(404, pages.NOT_FOUND)
        response = page(429, pages.TOO_MANY)
        response.headers["Retry-After"] = str(wait)
        return response

    async def readyz(request: web.BaseRequest) -> web.StreamResponse:
        database, broker = await asyncio.gather(
            health.database_reachable(pool), publisher.broker_reachable()
        )
        body = {
            "database": health.state(database),
            "broker": health.state(broker),
            "spooling": publisher.spooling,
            "listening": listener.listening,
        }
        # ?broker=optional: redirects go on while Kafka is down (clicks spool), so a
        # load balancer may keep such an instance in rotation.
        broker_needed = request.query.get("broker") != "optional"
        return health.answer(body, database and (broker or not broker_needed))

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        # The raw path is the path whenever it is "/" and a token (letters and digits:
        # nothing to unquote, no query); request.path builds a URL first.
        raw = request.raw_path
        token = raw[1:]
        if raw[:1] != "/" or not is_token(token):  # a CONNECT target has no "/"
            token = request.path[1:]
        if is_token(token):
            packed = cache_get(token)
            if packed is not None:
                group = groups[packed[0] | packed[1] << 8 | packed[2] << 16]
                if group is not None:
                    return respond(request, token, group, packed)
            if token == _HEALTHZ:
                return health.liveness(supervisor)
            if token == _READYZ:
                return await readyz(request)
            return await miss(request, token)
        if branded and token.startswith(".well-known/"):
            return counted(_well_known(served(request.headers.get("Host")), token))
        return counted(_other(token))

    return handle


def _page(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, headers=pages.HTML_HEADERS)


def _method_not_allowed() -> web.Response:
    return web.Response(status=405, headers={"Allow": "GET, HEAD"}, text="method not allowed")


def _found(place: str) -> web.StreamResponse:
    """302 to `place` (checked when it was stored; refused here if no header can carry it)."""
    if encodable(place) is None:
        return _page(404, pages.NOT_FOUND)
    response = web.StreamResponse(
        status=302, headers={"Location": place, "Cache-Control": CACHE_CONTROL}
    )
    response.content_length = 0
    return response


# The app-link documents a branded domain serves, by path (shortlink.redirect.domains).
WELL_KNOWN = {
    ".well-known/apple-app-site-association": "apple_app_site_association",
    ".well-known/assetlinks.json": "assetlinks",
}


def _well_known(host: Served | None, path: str) -> web.StreamResponse:
    """A branded domain's app-link document (iOS universal links, Android app links)."""
    field = WELL_KNOWN.get(path)
    if host is None or field is None:
        return _other(path)
    body: bytes | None = getattr(host, field)
    if body is None:
        return _page(404, pages.NOT_FOUND)
    return web.Response(
        body=body, content_type=_JSON, headers={"Cache-Control": "public, max-age=300"}
    )


def _other(path: str) -> web.StreamResponse:
    """Everything that is not shaped like a token: never reaches the cache or the database."""
    if path == "robots.txt":
        return web.Response(
            body=pages.ROBOTS_TXT,
            content_type="text/plain",
            headers={"Cache-Control": "public, max-age=86400"},
        )
    if path == "favicon.ico":
        return web.Response(status=404, headers={"Cache-Control": "public, max-age=86400"})
    return _page(404, pages.NOT_FOUND)
