"""Delivering to customers: batches from the outbox, one queue per endpoint, retries.

Two duties, one loop per forwarder process:

- **Batching**: clicks left in the outbox by the recorder become a delivery when
  100 of them wait for an endpoint in one format or the oldest has waited
  DELIVERY_LINGER_MS. Each waiting click keeps the format it was enqueued for, so
  an endpoint that switched formats still gets them as the batches they were
  meant to be. Rows are claimed FOR UPDATE SKIP LOCKED, so processes never batch a
  click twice; a click that cannot be rendered becomes a dead letter of its own.
- **Sending**: every endpoint with a delivery due gets a task of its own; a slow
  or dead endpoint only ever holds up its own task. A task sends only while it
  holds the endpoint's lease (forwarder.lease), so across all forwarder processes
  one process sends to an endpoint at a time, with at most ENDPOINT_CONCURRENCY
  requests in flight (1 by default: the seeds promise to serialise requests to a
  customer). Each delivery is sent in the format it was made in.

A delivery succeeds on any 2xx received within DELIVERY_TIMEOUT_SECONDS (connect,
send and response together). Anything else (timeout, connection or TLS error,
3xx, 4xx, 5xx, or an unexpected error while making the attempt) is a failed
attempt, retried after an exponential backoff with
jitter: attempt n failed -> wait base * 2**(n-1) * uniform(0.5, 1), capped by
DELIVERY_RETRY_MAX_SECONDS, and never less than a Retry-After sent with 429 or
503. With the defaults (base 5 s, 10 attempts) the waits are about 2.5-5, 5-10,
10-20, 20-40, 40-80, 80-160, 160-320, 320-640 and 640-1280 s: a dead letter
after at most ~42 minutes, kept with its last error until `shortlink deliveries
retry` sends it again. A 410 Gone also disables the endpoint.

Only the status of an answer counts. Its body is read up to MAX_RESPONSE_BYTES
(64 KiB), so a connection can be kept for the next request; a longer body is not
read further and its connection is closed, so a customer answering with a huge or
endless body holds neither memory nor the attempt (which still counts by its status).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import NEEDS_CLEANUP_CLOSED
from aiohttp.resolver import DefaultResolver
from yarl import URL

from forwarder import formats, signing
from forwarder.config import ForwarderConfig
from forwarder.exceptions import LeaseLost, RefusedAddress
from forwarder.lease import DATABASE_ERRORS, HELD, STEPS_PER_LEASE, Lease, Target
from forwarder.outbox import Outbox
from shortlink.db import is_transient
from shortlink.deliveries import last_error_text
from shortlink.endpoints import is_public, literal_address
from shortlink.exceptions import EndpointError
from shortlink.metrics import DELIVERY_BUCKETS, Buckets
from shortlink.retry import Backoff, Retry
from shortlink.supervise import RESTART, Supervisor

log = logging.getLogger(__name__)

USER_AGENT = "shortlink-forwarder/0.1"
_PREFETCH = 20  # due deliveries read per query
_MAX_ENDPOINT_TASKS = 1_000
# Waits of the delivery loop after a transient database error: 0.5 to 1 s each time
# (the next tick retries anyway; jittered, so the processes do not retry in step).
_LOOP_RETRY = Backoff(first=1.0, cap=1.0)
# Delivery latency is labelled by endpoint id for this many endpoints (then "other"),
# so the number of series stays bounded whatever the number of customers.
MAX_LATENCY_LABELS = 50
MAX_RESPONSE_BYTES = 64 * 1024  # of a customer's answer's body, read then dropped


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
    delay = Backoff(first=min(base, cap), cap=cap).delay(failed_attempts)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None for
    anything else (a malformed value leaves the backoff alone)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # RFC 9110 delay-seconds: ASCII digits only
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
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


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the body of an answer, up to MAX_RESPONSE_BYTES: all of a short one, so the
    connection goes back to the pool; past that, close the connection unread."""
    left = MAX_RESPONSE_BYTES
    while left >= 0:
        chunk = await response.content.read(left + 1)
        if not chunk:
            return
        left -= len(chunk)
    response.close()


class Deliverer:
    """Batches the outbox and sends deliveries for one forwarder process."""

    def __init__(
        self,
        config: ForwarderConfig,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        *,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._session = session
        self._supervisor = supervisor
        self._ssl = ssl_context(config)
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Endpoints whose task failed: (failures in a row, monotonic time to try again).
        self._backoff: dict[int, tuple[int, float]] = {}
        self._tick = max(0.02, min(0.25, config.linger / 4))
        self._step = config.lease / STEPS_PER_LEASE  # bound of one database statement
        self._outbox = Outbox(config, pool, on_error=self._unexpected)
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.dead = 0
        self.in_flight = 0
        self.leases_lost = 0
        self.unexpected_errors = 0  # caught and got over; also counted by the supervisor
        # POST durations by endpoint id; past MAX_LATENCY_LABELS endpoints, under "other".
        self.latency: dict[str, Buckets] = {}

    @property
    def batches_made(self) -> int:
        return self._outbox.batches_made

    def wake(self) -> None:
        """New deliveries exist: look now rather than at the next tick."""
        self._wakeup.set()

    async def run(self) -> None:
        """The loop: batch, start endpoint tasks; until cancelled (shortlink.purge removes
        what was delivered).

        Transient database failures are waited out here; anything else reaches the
        supervisor, which restarts the loop (no row can make it fail for ever: a click
        that cannot be rendered or stored and a delivery that cannot be sent become dead
        letters, or wait apart; see forwarder.outbox).
        """
        retry = Retry(_LOOP_RETRY, on=is_transient)
        try:
            while True:
                try:
                    await self._outbox.make_batches()
                    await self._dispatch()
                    retry.succeeded()
                except Exception as exc:
                    # Named transient failures are waited out here; anything else (a
                    # missing migration, a bug) is the supervisor's to count and restart.
                    if not retry.transient(exc):
                        raise
                    log.warning("delivery loop: database error", extra={"error": repr(exc)})
                    await retry.wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._tick)
                self._wakeup.clear()
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._release_all()

    def _unexpected(self) -> None:
        """Count an unexpected error that was logged and got over."""
        self.unexpected_errors += 1
        if self._supervisor is not None:
            self._supervisor.recovered("deliverer")

    # -- sending --------------------------------------------------------------

    async def _dispatch(self) -> None:
        async with asyncio.timeout(self._step):
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
        now = time.monotonic()
        for row in rows:
            endpoint_id = row["id"]
            if endpoint_id in self._tasks or len(self._tasks) >= _MAX_ENDPOINT_TASKS:
                continue
            backoff = self._backoff.get(endpoint_id)
            if backoff is not None and now < backoff[1]:
                continue
            task = asyncio.create_task(self._serve(endpoint_id), name=f"endpoint-{endpoint_id}")
            self._tasks[endpoint_id] = task
            task.add_done_callback(functools.partial(self._finished, endpoint_id))

    def _finished(self, endpoint_id: int, task: asyncio.Task[None]) -> None:
        """An endpoint task ended: a failure is logged and its next start backed off."""
        self._tasks.pop(endpoint_id, None)
        error = None if task.cancelled() else task.exception()
        if error is None:
            self._backoff.pop(endpoint_id, None)
            return
        failures = self._backoff.get(endpoint_id, (0, 0.0))[0] + 1
        delay = RESTART.delay(failures)
        self._backoff[endpoint_id] = (failures, time.monotonic() + delay)
        extra = {"endpoint_id": endpoint_id, "error": repr(error), "retry_in": round(delay, 2)}
        if isinstance(error, DATABASE_ERRORS):
            log.warning("endpoint task: database error", extra=extra)
        else:
            log.error("endpoint task failed", exc_info=error, extra=extra)
            self._unexpected()
        self._wakeup.set()

    async def _serve(self, endpoint_id: int) -> None:
        """Send this endpoint's due deliveries while we hold its lease (forwarder.lease)."""
        lease = Lease(
            self._pool, endpoint_id, self._owner, self._config.lease, on_error=self._unexpected
        )
        if not await lease.take():
            return
        keeper = asyncio.create_task(lease.keep(), name=f"lease-{endpoint_id}")
        try:
            await self._send_due(lease)
        except LeaseLost:
            self.leases_lost += 1
            log.warning(
                "stopped sending to an endpoint: its lease was lost",
                extra={"endpoint_id": endpoint_id},
            )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await lease.release()

    async def _send_due(self, lease: Lease) -> None:
        """Due deliveries oldest first, ENDPOINT_CONCURRENCY requests at a time.

        A failure pauses the endpoint until the failed delivery's next attempt, so the
        batches queued behind it wait instead of each timing out in turn.
        """
        concurrency = self._config.endpoint_concurrency
        # What a request needs of the lease: its timeout, then one step to settle it.
        needed = self._config.timeout + lease.step_seconds
        while True:
            async with lease.step():
                due = await self._pool.fetch(
                    """
                    SELECT request_identifier, format, body, attempts FROM deliveries
                    WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at <= now()
                    ORDER BY next_attempt_at, created_at
                    LIMIT $2
                    """,
                    lease.endpoint_id,
                    _PREFETCH,
                )
            if not due:
                return
            for start in range(0, len(due), concurrency):
                if lease.remaining < needed:
                    await lease.renew()
                    if lease.remaining < needed:  # the database took a step to answer
                        return
                target = lease.target
                group = due[start : start + concurrency]
                async with lease.request():
                    attempts = await asyncio.gather(*(self._post(target, row) for row in group))
                delays = [
                    await self._settle(lease, row["request_identifier"], row["attempts"] + 1, a)
                    for row, a in zip(group, attempts, strict=True)
                ]
                failed = [delay for delay in delays if delay is not None]
                if failed:
                    await self._pause(lease, min(failed))
                    return

    async def _pause(self, lease: Lease, seconds: float) -> None:
        async with lease.step():
            await self._pool.execute(
                """
                UPDATE endpoints SET paused_until = now() + make_interval(secs => $2)
                WHERE id = $1 AND lease_owner = $3
                """,
                lease.endpoint_id,
                seconds,
                lease.owner,
            )

    async def _release_all(self) -> None:
        with contextlib.suppress(*DATABASE_ERRORS):
            async with asyncio.timeout(self._step):
                await self._pool.execute(
                    """
                    UPDATE endpoints SET lease_owner = NULL, lease_until = NULL
                    WHERE lease_owner = $1
                    """,
                    self._owner,
                )

    async def _post(self, target: Target, row: asyncpg.Record) -> Attempt:
        """One POST of one delivery, in the format it was rendered in; any unexpected
        error becomes a failed attempt (counted towards the dead letter)."""
        request_id = str(row["request_identifier"])
        format, number = row["format"], row["attempts"] + 1
        self.sent += 1
        self.in_flight += 1
        started = time.monotonic()
        try:
            body = formats.body_for_attempt(format, row["body"], number)
            headers = {
                "Content-Type": formats.CONTENT_TYPES[format],
                "User-Agent": USER_AGENT,
                "X-Request-Identifier": request_id,
            }
            if target.secret:
                headers.update(signing.headers(target.secret, request_id, int(time.time()), body))
            return await self._send(target, body, headers)
        except Exception as exc:  # a delivery that cannot be sent must die, not loop
            log.exception(
                "delivery attempt failed unexpectedly",
                extra={"request_identifier": request_id, "endpoint_id": target.id},
            )
            self._unexpected()
            return Attempt(False, None, f"internal error: {exc!r}")
        finally:
            self.in_flight -= 1
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
            url = self._checked_url(target.url)
            async with asyncio.timeout(self._config.timeout):
                async with self._session.post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    ssl=self._ssl,
                ) as response:
                    await _drain(response)
        except TimeoutError:
            return Attempt(False, None, f"no answer within {self._config.timeout:g} s")
        except RefusedAddress as exc:
            return Attempt(False, None, f"refused: {exc}")
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

    def _checked_url(self, url: str) -> URL:
        """The URL as aiohttp will use it, its host checked if it is an IP address: aiohttp
        connects to those without asking the resolver, which cannot refuse them then."""
        try:
            parsed = URL(url)
            address = literal_address(parsed.raw_host or "")
        except EndpointError as exc:
            raise RefusedAddress(exc.message) from None
        except ValueError as exc:
            raise RefusedAddress(f"not a valid URL ({exc})") from None
        if (
            address is not None
            and not self._config.allow_private_endpoints
            and not is_public(address)
        ):
            raise RefusedAddress(f"{parsed.raw_host} is not a public address")
        return parsed

    async def _settle(
        self, lease: Lease, request_id: uuid.UUID, number: int, attempt: Attempt
    ) -> float | None:
        """Record how an attempt went, if we still hold the lease (LeaseLost otherwise);
        for a failure, the seconds until the next attempt."""
        config = self._config
        held = HELD.format(owner="$3")
        if attempt.ok:
            async with lease.step():
                status = await self._pool.execute(
                    f"""
                    UPDATE deliveries d SET status = 'delivered', attempts = $2,
                           delivered_at = now(), last_status = $4, last_error = NULL
                    FROM endpoints e
                    WHERE d.request_identifier = $1 AND e.id = d.endpoint_id AND {held}
                    """,
                    request_id,
                    number,
                    lease.owner,
                    attempt.status,
                )
            self._settled(lease, status)
            self.delivered += 1
            return None
        dead = number >= config.max_attempts
        delay = retry_delay(number, config.retry_base, config.retry_max, attempt.retry_after)
        error = last_error_text(attempt.error or "failed")
        async with lease.step():
            status = await self._pool.execute(
                f"""
                UPDATE deliveries d SET attempts = $2, last_status = $4, last_error = $5,
                       status = CASE WHEN $6 THEN 'dead' ELSE 'pending' END,
                       next_attempt_at = now() + make_interval(secs => $7)
                FROM endpoints e
                WHERE d.request_identifier = $1 AND e.id = d.endpoint_id AND {held}
                """,
                request_id,
                number,
                lease.owner,
                attempt.status,
                error,
                dead,
                delay,
            )
        self._settled(lease, status)
        self.failed += 1
        self.dead += dead
        log.warning(
            "delivery failed",
            extra={
                "request_identifier": str(request_id),
                "endpoint_id": lease.endpoint_id,
                "attempt": number,
                "error": error,
                "dead": dead,
                "retry_in": None if dead else round(delay, 1),
            },
        )
        if attempt.status == 410:
            async with lease.step():
                await self._pool.execute(
                    """
                    UPDATE endpoints SET enabled = false, updated_at = now(),
                           disabled_reason = 'the endpoint answered 410 Gone'
                    WHERE id = $1 AND lease_owner = $2
                    """,
                    lease.endpoint_id,
                    lease.owner,
                )
            log.warning(
                "endpoint answered 410 Gone: disabled", extra={"endpoint_id": lease.endpoint_id}
            )
        return delay

    @staticmethod
    def _settled(lease: Lease, status: str) -> None:
        """LeaseLost unless the settling statement found the lease still ours."""
        if status.split()[-1] == "0":
            lease.lose()
            raise LeaseLost(f"endpoint {lease.endpoint_id}: the lease was lost mid-request")


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
            # Closes TLS transports that a peer left half-closed, working around a leak in
            # CPython's ssl fixed in 3.12.8 and 3.13.1; aiohttp warns when asked for it on a
            # fixed Python (an error under the tests), so ask only where it helps.
            enable_cleanup_closed=NEEDS_CLEANUP_CLOSED,
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
