"""Delivering to customers: batches from the outbox, one queue per endpoint, retries.

Two duties, one loop per forwarder process:

- **Batching**: clicks left in the outbox by the recorder become a delivery when
  100 of them wait for an endpoint or the oldest has waited DELIVERY_LINGER_MS.
  Rows are claimed FOR UPDATE SKIP LOCKED, so processes never batch a click twice.
- **Sending**: every endpoint with a delivery due gets a task of its own; a slow
  or dead endpoint only ever holds up its own task. A task first takes the
  endpoint's lease (a row lock with an expiry in `endpoints`), so across all
  forwarder processes one process sends to an endpoint at a time, with at most
  ENDPOINT_CONCURRENCY requests in flight (1 by default: the seeds promise to
  serialise requests to a customer).

A delivery succeeds on any 2xx received within DELIVERY_TIMEOUT_SECONDS (connect,
send and response together). Anything else (timeout, connection or TLS error,
3xx, 4xx, 5xx) is a failed attempt, retried after an exponential backoff with
jitter: attempt n failed -> wait base * 2**(n-1) * uniform(0.5, 1), capped by
DELIVERY_RETRY_MAX_SECONDS, and never less than a Retry-After sent with 429 or
503. With the defaults (base 5 s, 10 attempts) the waits are about 2.5-5, 5-10,
10-20, 20-40, 40-80, 80-160, 160-320, 320-640 and 640-1280 s: a dead letter
after at most ~42 minutes, kept with its last error until `shortlink deliveries
retry` sends it again. A 410 Gone also disables the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ipaddress
import logging
import os
import random
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from forwarder import formats, signing
from forwarder.config import ForwarderConfig
from shortlink.endpoints import is_public
from shortlink.metrics import DELIVERY_BUCKETS, Buckets

log = logging.getLogger(__name__)

USER_AGENT = "shortlink-forwarder/0.1"
LEASE_SECONDS = 60
_PREFETCH = 20  # due deliveries read per query
_MAX_ENDPOINT_TASKS = 1_000
_PURGE_EVERY = 3_600.0
# Delivery latency is labelled by endpoint id for this many endpoints (then "other"),
# so the number of series stays bounded whatever the number of customers.
MAX_LATENCY_LABELS = 50


class RefusedAddress(OSError):
    """The endpoint resolved to an address we must not connect to."""


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, and refuses non-public addresses.

    Checked at every connection, so DNS cannot point an endpoint inward later.
    """

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in results:
                if not is_public(result["host"]):
                    raise RefusedAddress(f"{host} resolves to non-public address {result['host']}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def ssl_context(config: ForwarderConfig) -> ssl.SSLContext:
    """Certificate verification on, against the system CAs plus ENDPOINT_CA_FILE."""
    context = ssl.create_default_context()
    if config.ca_file is not None:
        context.load_verify_locations(cafile=str(config.ca_file))
    return context


def retry_delay(
    failed_attempts: int, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after the `failed_attempts`-th failure (see the module docstring)."""
    jitter = random.uniform(0.5, 1.0)  # noqa: S311 - spreads retries; not a secret
    delay = float(min(cap, base * 2 ** (failed_attempts - 1)) * jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class Attempt:
    """How one POST went."""

    ok: bool
    status: int | None
    error: str | None
    retry_after: float | None = None


@dataclass(frozen=True)
class Target:
    id: int
    url: str
    format: str
    secret: str | None


class Deliverer:
    """Batches the outbox and sends deliveries for one forwarder process."""

    def __init__(
        self, config: ForwarderConfig, pool: asyncpg.Pool, session: aiohttp.ClientSession
    ) -> None:
        self._config = config
        self._pool = pool
        self._session = session
        self._ssl = ssl_context(config)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._tick = max(0.02, min(0.25, config.linger / 4))
        self._last_purge = 0.0
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.dead = 0
        self.batches_made = 0
        # POST durations by endpoint id; past MAX_LATENCY_LABELS endpoints, under "other".
        self.latency: dict[str, Buckets] = {}

    def wake(self) -> None:
        """New deliveries exist: look now rather than at the next tick."""
        self._wakeup.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._make_batches()
                    await self._dispatch()
                    await self._purge()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    log.warning("delivery loop: database error", extra={"error": repr(exc)})
                    await asyncio.sleep(1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._tick)
                self._wakeup.clear()
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._release_all()

    # -- batching -------------------------------------------------------------

    async def _make_batches(self) -> None:
        config = self._config
        due = await self._pool.fetch(
            """
            SELECT o.endpoint_id, e.format FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id
            WHERE e.enabled
            GROUP BY o.endpoint_id, e.format
            HAVING count(*) >= $1 OR min(o.enqueued_at) <= now() - $2::interval
            """,
            config.batch_size,
            timedelta(seconds=config.linger),
        )
        for row in due:
            while await self._batch_one(row["endpoint_id"], row["format"]):
                pass

    async def _batch_one(self, endpoint_id: int, format: str) -> bool:
        """Turn up to one batch of waiting clicks into a delivery; True if a full one remains."""
        config = self._config
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, detail, enqueued_at FROM outbox
                WHERE endpoint_id = $1 ORDER BY id LIMIT $2
                FOR UPDATE SKIP LOCKED
                """,
                endpoint_id,
                config.batch_size,
            )
            if not rows:
                return False
            if len(rows) < config.batch_size:
                oldest = min(row["enqueued_at"] for row in rows)
                waited = await conn.fetchval("SELECT now() - $1::timestamptz", oldest)
                if waited < timedelta(seconds=config.linger):
                    return False
            request_id = str(uuid.uuid4())
            details = [formats.decode_detail(row["detail"]) for row in rows]
            await conn.execute(
                """
                INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                        oldest_click_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                """,
                request_id,
                endpoint_id,
                format,
                formats.render(format, request_id, details),
                len(rows),
                min(row["enqueued_at"] for row in rows),
            )
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
            )
        self.batches_made += 1
        return len(rows) == config.batch_size

    # -- sending --------------------------------------------------------------

    async def _dispatch(self) -> None:
        rows = await self._pool.fetch(
            """
            SELECT e.id FROM endpoints e
            WHERE e.enabled
              AND (e.lease_until IS NULL OR e.lease_until < now() OR e.lease_owner = $1)
              AND (e.paused_until IS NULL OR e.paused_until <= now())
              AND EXISTS (SELECT 1 FROM deliveries d
                          WHERE d.endpoint_id = e.id AND d.status = 'pending'
                            AND d.next_attempt_at <= now())
            ORDER BY e.id
            """,
            self._owner,
        )
        for row in rows:
            endpoint_id = row["id"]
            if endpoint_id in self._tasks or len(self._tasks) >= _MAX_ENDPOINT_TASKS:
                continue
            task = asyncio.create_task(self._serve(endpoint_id), name=f"endpoint-{endpoint_id}")
            self._tasks[endpoint_id] = task
            task.add_done_callback(functools.partial(self._finished, endpoint_id))

    def _finished(self, endpoint_id: int, task: asyncio.Task[None]) -> None:
        self._tasks.pop(endpoint_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "endpoint task failed",
                extra={"endpoint_id": endpoint_id, "error": repr(task.exception())},
            )
            self._wakeup.set()

    async def _serve(self, endpoint_id: int) -> None:
        """Send this endpoint's due deliveries while we hold its lease, oldest first.

        ENDPOINT_CONCURRENCY requests at a time. A failure pauses the endpoint until
        the failed delivery's next attempt, so the batches queued behind it wait
        instead of each timing out in turn.
        """
        concurrency = self._config.endpoint_concurrency
        renew_at = 0.0
        target: Target | None = None
        try:
            while True:
                if target is None or time.monotonic() >= renew_at:
                    target = await self._lease(endpoint_id)
                    if target is None:
                        return
                    renew_at = time.monotonic() + LEASE_SECONDS / 3
                due = await self._pool.fetch(
                    """
                    SELECT request_identifier, body, attempts FROM deliveries
                    WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at <= now()
                    ORDER BY next_attempt_at, created_at
                    LIMIT $2
                    """,
                    endpoint_id,
                    _PREFETCH,
                )
                if not due:
                    return
                for start in range(0, len(due), concurrency):
                    group = due[start : start + concurrency]
                    attempts = await asyncio.gather(
                        *(
                            self._post(
                                target,
                                str(row["request_identifier"]),
                                row["body"],
                                row["attempts"] + 1,
                            )
                            for row in group
                        )
                    )
                    delays = [
                        await self._settle(
                            target, row["request_identifier"], row["attempts"] + 1, attempt
                        )
                        for row, attempt in zip(group, attempts, strict=True)
                    ]
                    failed = [delay for delay in delays if delay is not None]
                    if failed:
                        await self._pause(endpoint_id, min(failed))
                        return
                    if time.monotonic() >= renew_at:
                        break  # renew the lease before sending more
        finally:
            await self._release(endpoint_id)

    async def _pause(self, endpoint_id: int, seconds: float) -> None:
        await self._pool.execute(
            "UPDATE endpoints SET paused_until = now() + make_interval(secs => $2) WHERE id = $1",
            endpoint_id,
            seconds,
        )

    async def _lease(self, endpoint_id: int) -> Target | None:
        row = await self._pool.fetchrow(
            """
            UPDATE endpoints SET lease_owner = $2,
                                 lease_until = now() + make_interval(secs => $3)
            WHERE id = $1 AND enabled
              AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $2)
            RETURNING id, url, format, secret
            """,
            endpoint_id,
            self._owner,
            float(LEASE_SECONDS),
        )
        return None if row is None else Target(row["id"], row["url"], row["format"], row["secret"])

    async def _release(self, endpoint_id: int) -> None:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await self._pool.execute(
                """
                UPDATE endpoints SET lease_owner = NULL, lease_until = NULL
                WHERE id = $1 AND lease_owner = $2
                """,
                endpoint_id,
                self._owner,
            )

    async def _release_all(self) -> None:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await self._pool.execute(
                """
                UPDATE endpoints SET lease_owner = NULL, lease_until = NULL
                WHERE lease_owner = $1
                """,
                self._owner,
            )

    async def _post(self, target: Target, request_id: str, stored: bytes, number: int) -> Attempt:
        """One POST of one delivery: attempt `number` (1-based)."""
        body = formats.body_for_attempt(target.format, stored, number)
        headers = {
            "Content-Type": formats.CONTENT_TYPES[target.format],
            "User-Agent": USER_AGENT,
            "X-Request-Identifier": request_id,
        }
        if target.secret:
            headers.update(signing.headers(target.secret, request_id, int(time.time()), body))
        self.sent += 1
        started = time.monotonic()
        try:
            return await self._send(target, body, headers)
        finally:
            self._observe(target.id, time.monotonic() - started)

    def _observe(self, endpoint_id: int, seconds: float) -> None:
        label = str(endpoint_id)
        buckets = self.latency.get(label)
        if buckets is None:
            if len(self.latency) >= MAX_LATENCY_LABELS:
                label = "other"
            buckets = self.latency.setdefault(label, Buckets(DELIVERY_BUCKETS))
        buckets.observe(seconds)

    async def _send(self, target: Target, body: bytes, headers: dict[str, str]) -> Attempt:
        try:
            self._check_literal_address(target.url)
            async with asyncio.timeout(self._config.timeout):
                async with self._session.post(
                    target.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    ssl=self._ssl,
                ) as response:
                    await response.read()
        except TimeoutError:
            return Attempt(False, None, f"no answer within {self._config.timeout:g} s")
        except aiohttp.ClientSSLError as exc:
            return Attempt(False, None, f"TLS: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(False, None, f"connection: {exc}")
        if 200 <= response.status < 300:
            return Attempt(True, response.status, None)
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After"))
            if response.status in (429, 503)
            else None
        )
        return Attempt(False, response.status, f"HTTP {response.status}", retry_after)

    def _check_literal_address(self, url: str) -> None:
        """aiohttp does not resolve IP literals, so the resolver cannot refuse them."""
        host = urlsplit(url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return
        if not self._config.allow_private_endpoints and not is_public(host):
            raise RefusedAddress(f"{host} is not a public address")

    async def _settle(
        self, target: Target, request_id: uuid.UUID, number: int, attempt: Attempt
    ) -> float | None:
        """Record how an attempt went; for a failure, the seconds until the next one."""
        config = self._config
        if attempt.ok:
            self.delivered += 1
            await self._pool.execute(
                """
                UPDATE deliveries SET status = 'delivered', attempts = $2, delivered_at = now(),
                                      last_status = $3, last_error = NULL
                WHERE request_identifier = $1
                """,
                request_id,
                number,
                attempt.status,
            )
            return None
        self.failed += 1
        dead = number >= config.max_attempts
        self.dead += dead
        delay = retry_delay(number, config.retry_base, config.retry_max, attempt.retry_after)
        await self._pool.execute(
            """
            UPDATE deliveries SET attempts = $2, last_status = $3, last_error = $4,
                                  status = CASE WHEN $5 THEN 'dead' ELSE 'pending' END,
                                  next_attempt_at = now() + make_interval(secs => $6)
            WHERE request_identifier = $1
            """,
            request_id,
            number,
            attempt.status,
            attempt.error,
            dead,
            delay,
        )
        log.warning(
            "delivery failed",
            extra={
                "request_identifier": str(request_id),
                "endpoint_id": target.id,
                "attempt": number,
                "error": attempt.error,
                "dead": dead,
                "retry_in": None if dead else round(delay, 1),
            },
        )
        if attempt.status == 410:
            await self._pool.execute(
                """
                UPDATE endpoints SET enabled = false, updated_at = now(),
                       disabled_reason = 'the endpoint answered 410 Gone'
                WHERE id = $1
                """,
                target.id,
            )
            log.warning("endpoint answered 410 Gone: disabled", extra={"endpoint_id": target.id})
        return delay

    async def _purge(self) -> None:
        """Forget delivered deliveries after DELIVERY_RETENTION_DAYS (dead ones are kept)."""
        now = time.monotonic()
        if now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        await self._pool.execute(
            """
            DELETE FROM deliveries
            WHERE status = 'delivered' AND delivered_at < now() - $1::interval
            """,
            timedelta(days=self._config.retention_days),
        )


HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)


def session_context(
    config: ForwarderConfig,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: the HTTP client session every delivery goes through."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(config.allow_private_endpoints),
            limit=0,  # per-endpoint concurrency is ours to limit
            limit_per_host=0,
            ttl_dns_cache=60,
            enable_cleanup_closed=True,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        app[HTTP_SESSION] = session
        try:
            yield
        finally:
            await session.close()

    return context
