"""Bearer API keys, their scopes and their rate limit: every /v1 route but the public ones
(shortlink.api.scopes) needs a key (the CSV routes take the dashboard's session cookie
instead, signed in before this).

A key is looked up by its SHA-256 and counted against its rate limit in the same
statement (shortlink.accounts.use_key); a missing, unknown, revoked, expired or
disabled key is a 401. Over the limit, a 429 with Retry-After; a key without the
scope the route needs, a 403 naming the scope. Every answer to a request made
with a working key carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset
(seconds until the window ends). The account found is the only one the request
can see: other accounts' ids answer 404.

Keys and dashboard sessions are checked on the primary (`check_key`), within
KEY_CHECK_TIMEOUT_SECONDS: a primary cut off answers nothing. A route that only
reads, from READ_POOL (READ_SIDE), then has its key checked on the read pool
instead when that is a replica of its own, without counting the request (the
replica takes no writes): the statistics and the dashboard's campaign pages answer
through a failover. A key revoked within the replica's lag may still read there for
that long. Any other route answers 503.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from shortlink.accounts import KeyUse, use_key
from shortlink.api import scopes
from shortlink.api.errors import ApiError, Handler
from shortlink.api.keys import API_CONFIG
from shortlink.clientip import forwarded_for, resolver
from shortlink.db import Executor, is_transient
from shortlink.pool import POOL, READ_POOL, PoolBusy, promptly

log = logging.getLogger(__name__)
T = TypeVar("T")

ACCOUNT_ID = web.RequestKey("account_id", int)
KEY_ID = web.RequestKey("key_id", int)  # the key the request came with (or its session's)
SCOPES = web.RequestKey("scopes", frozenset[str])
RATE = web.RequestKey("rate_limit", KeyUse)


class PrimaryAway:
    """When the primary last failed a key check: for AWAY_SECONDS after that, read-side
    requests check their key on the read pool at once instead of each waiting out
    KEY_CHECK_TIMEOUT_SECONDS first (a failover takes some 15 s; its reads stay fast)."""

    AWAY_SECONDS = 10.0

    def __init__(self) -> None:
        self.until = 0.0

    def failed(self) -> None:
        self.until = time.monotonic() + self.AWAY_SECONDS

    def away(self) -> bool:
        return time.monotonic() < self.until


PRIMARY_AWAY = web.AppKey("primary_away", PrimaryAway)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _reset_seconds(use: KeyUse) -> int:
    return max(1, math.ceil(use.reset_at - time.time()))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/") or request.path in scopes.PUBLIC_PATHS:
        return await handler(request)
    if ACCOUNT_ID in request:  # signed in by the dashboard's session cookie (CSV downloads)
        require_scope(request)
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("send Authorization: Bearer <api key>")
    limit = request.app[API_CONFIG].rate_limit_per_minute
    use = await check_key(
        request, lambda db, counted: use_key(db, key.strip(), default_limit=limit, counted=counted)
    )
    if use is None:
        raise _unauthorized("the API key is not valid")
    request[RATE] = use
    request[ACCOUNT_ID] = use.account_id
    request[KEY_ID] = use.key_id
    request[SCOPES] = use.scopes
    if use.used > use.limit:
        seconds = _reset_seconds(use)
        raise ApiError(
            429,
            "rate_limited",
            f"this API key may make {use.limit} requests a minute; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    require_scope(request)
    return await handler(request)


# The routes whose answers come from READ_POOL alone: the campaign statistics, click
# listings, campaign list and CSV exports, and the dashboard's campaign pages
# (tests/shortlink/api/test_read_pool.py checks that each reads there).
READ_SIDE = frozenset(
    {
        ("GET", "/v1/campaigns"),
        ("GET", "/v1/campaigns/{client_identifier}/stats"),
        ("GET", "/v1/campaigns/{client_identifier}/clicks"),
        ("GET", "/v1/campaigns/{client_identifier}/clicks.csv"),
        ("GET", "/v1/campaigns/{client_identifier}/recipients.csv"),
        ("GET", "/dashboard/campaigns"),
        ("GET", "/dashboard/campaigns/{name}"),
    }
)


def reads_only(request: web.Request) -> bool:
    """Whether the request's route is one of READ_SIDE (HEAD as GET)."""
    match_info = request.match_info
    resource = match_info.route.resource if match_info.http_exception is None else None
    if resource is None:
        return False
    method = "GET" if request.method == "HEAD" else request.method
    return (method, resource.canonical) in READ_SIDE


async def check_key(request: web.Request, check: Callable[[Executor, bool], Awaitable[T]]) -> T:
    """`check(db, counted)`, a request's key or session check: on the primary within
    KEY_CHECK_TIMEOUT_SECONDS, counted; if the primary does not answer in time or cannot be
    reached, on the read pool uncounted for a READ_SIDE route when DATABASE_READ_URL is
    set, else that failure (a 503). After such a failure, read-side routes go to the read
    pool at once for PrimaryAway.AWAY_SECONDS."""
    app = request.app
    pool, read_pool, primary = app[POOL], app[READ_POOL], app[PRIMARY_AWAY]
    fallback = read_pool is not pool and reads_only(request)
    if fallback and primary.away():
        return await check(read_pool, False)
    try:
        return await promptly(
            pool, app[API_CONFIG].key_check_timeout, lambda conn: check(conn, True)
        )
    except Exception as exc:
        if not is_transient(exc):
            raise
        # A busy pool (every connection in use: load, or writes waiting on a primary that
        # went silent) says nothing of the primary: this request alone may read on the
        # replica, and the next ones try the primary again (remembering it as away would
        # let load lift the rate limit of every read-side request for AWAY_SECONDS).
        if not isinstance(exc, PoolBusy):
            primary.failed()
        if not fallback:
            raise
        log.warning(
            "the primary did not check the key; checked on the read pool",
            extra={"error": repr(exc), "path": request.path},
        )
    return await check(read_pool, False)


def require_scope(request: web.Request) -> None:
    """A 403 naming the scope unless the request's key holds the one its route needs."""
    match_info = request.match_info
    if match_info.http_exception is not None:  # no such route or method: its 404 or 405
        return
    resource = match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    try:
        needed = scopes.required(request.method, route)
    except scopes.NoScope:
        raise ApiError(403, "missing_scope", "this route is open to no API key") from None
    if needed is not None and needed not in request.get(SCOPES, frozenset()):
        raise ApiError(
            403,
            "missing_scope",
            f"the API key does not hold the scope {needed}, which this route needs",
            details=[{"field": "scope", "message": needed}],
        )


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the key's rate-limit headers, on every answer to a keyed request."""
    use = request.get(RATE)
    if use is not None:
        response.headers["RateLimit-Limit"] = str(use.limit)
        response.headers["RateLimit-Remaining"] = str(use.remaining)
        response.headers["RateLimit-Reset"] = str(_reset_seconds(use))


def client_address(request: web.Request) -> str | None:
    """The client's address as the audit log keeps it: the peer, or what X-Forwarded-For
    says behind TRUSTED_PROXIES (every line of the header, in order, so a proxy that adds
    a line of its own instead of appending to the client's cannot be bypassed)."""
    trusted = request.app[API_CONFIG].trusted_proxies
    return resolver(trusted)(request.remote, forwarded_for(request.headers))
