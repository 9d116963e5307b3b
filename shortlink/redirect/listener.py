"""Keeping a redirect worker's cache in step with PostgreSQL: warm-up and changes.

Three supervised tasks per worker:

- **link-listener** keeps one connection LISTENing on the link changes channel
  (shortlink.changes). A changed token is dropped from the cache at once; a
  range of created links is queued for the warmer; an account's new expired
  URL is kept (shortlink.redirect.expired); a changed branded domain is read
  again by the domain-reload task (shortlink.redirect.domains). The connection is checked every
  KEEPALIVE seconds (a connection can die without telling: a failover, a NAT
  timeout); on any failure it reconnects, and then catches up: it drops the
  tokens changed, and warms the links created, since it last knew it was
  listening (minus MARGIN), and reads the accounts' expired URLs again. The
  first connection warms the links created in the last WARM_WINDOW, as a
  worker that starts late would have missed them.
- **link-warmer** reads queued links into the cache in slices of WARM_SLICE by
  id, yielding to requests between slices, so the worker answers while it warms.
- **link-poll** asks every POLL_EVERY seconds, through the pool, which links
  changed since the last poll, and reads the accounts' expired URLs: a safety
  net that bounds how stale an entry can get even if notifications cannot be
  received at all, while the database can be reached (when it cannot, nobody
  can change a link either).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from shortlink import changes, partitions
from shortlink.db import require_database_url
from shortlink.links import (
    campaign_destination,
    changed_since,
    epoch_ms,
    fetch_id_range,
    first_id_since,
    retargeted_since,
)
from shortlink.metrics import Buckets
from shortlink.pool import POOL
from shortlink.redirect.cache import CACHE, EVICT_FRACTION, LinkCache
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.domains import BrandedHosts
from shortlink.redirect.expired import ExpiredPlaces
from shortlink.retry import Backoff, Retry
from shortlink.supervise import SUPERVISOR

log = logging.getLogger(__name__)

KEEPALIVE = 5.0
POLL_EVERY = 10.0
# Changes stamped this long before the moment a worker last knew it was in step are
# read again when it catches up: covers transactions still open at that moment and
# clock differences between hosts.
MARGIN = timedelta(seconds=60)
WARM_SLICE = 500  # links read and stored per stretch of the event loop (~2 ms)
WARM_READS_AHEAD = 2  # slices being read while one is stored
# Waits before listening or warming again after a database error: 0.5 to 1 s each
# time, so a worker is back in step soon after the database is (jittered, so the
# workers do not reconnect in step).
_RETRY = Backoff(first=1.0, cap=1.0)
WARM_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class _IdRange:
    first: int
    last: int
    noticed: float  # perf_counter when the notification arrived


@dataclass(frozen=True)
class _Since:
    moment: datetime


@dataclass(frozen=True)
class _Campaign:
    account_id: int
    campaign: str


class LinkListener:
    """The link-listener, link-warmer and link-poll tasks of one worker (module docstring)."""

    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        cache: LinkCache,
        *,
        places: ExpiredPlaces | None = None,
        hosts: BrandedHosts | None = None,
        capacity: int,
        warm_window: timedelta,
        warm_on_create: bool,
        keepalive: float = KEEPALIVE,
        poll_every: float = POLL_EVERY,
    ) -> None:
        self._database_url = database_url
        self._keepalive = keepalive
        self._poll_every = poll_every
        self._pool = pool
        self._cache = cache
        self.places = places if places is not None else ExpiredPlaces()
        self.hosts = hosts if hosts is not None else BrandedHosts()
        self._capacity = capacity
        self._warm_window = warm_window
        self._warm_on_create = warm_on_create
        self.ready = asyncio.Event()  # set once the first LISTEN is in place
        self.listening = False
        self._queue: asyncio.Queue[_IdRange | _Since | _Campaign] = asyncio.Queue()
        self._started = datetime.now(UTC)
        self._in_step_at: datetime | None = None  # last moment we knew we missed nothing
        self._poll_since = self._started - MARGIN
        self._applied: dict[str, datetime] = {}  # token -> the change already applied
        self.reconnects = 0
        self.invalidated = 0
        self.retargeted = 0  # campaign groups changed in place
        self._retargets: dict[tuple[int, str], datetime] = {}  # the retargeting applied
        # Notification -> links in the cache (one observation per notified id range).
        self.warm_seconds = Buckets(WARM_BUCKETS)

    # -- link-listener ----------------------------------------------------------

    async def listen(self) -> None:
        retry = Retry(_RETRY, on=_DB_ERRORS)
        while True:
            try:
                conn = await asyncpg.connect(
                    self._database_url,
                    timeout=10,
                    server_settings={"application_name": "shortlink-link-listener"},
                )
            except _DB_ERRORS as exc:
                log.warning("cannot listen for link changes", extra={"error": repr(exc)})
                await retry.wait()
                continue
            retry.succeeded()
            try:
                await self._listen_on(conn)
            except _DB_ERRORS as exc:
                log.warning("link-changes connection failed", extra={"error": repr(exc)})
            finally:
                self.listening = False
                with contextlib.suppress(*_DB_ERRORS):
                    await conn.close(timeout=2)
            self.reconnects += 1
            await retry.wait()

    async def _listen_on(self, conn: asyncpg.Connection) -> None:
        closed = asyncio.Event()
        conn.add_termination_listener(functools.partial(_set, closed))
        await conn.add_listener(changes.CHANNEL, self._notified)
        listening_since: datetime = await conn.fetchval("SELECT now()")
        self.listening = True
        first = self._in_step_at is None
        since = self._started - MARGIN if self._in_step_at is None else self._in_step_at - MARGIN
        await self._catch_up(since)
        await self.places.reload(self._pool)
        await self.hosts.reload(self._pool)
        if self._warm_on_create:
            if first:
                self._queue.put_nowait(_Since(listening_since - self._warm_window))
            else:
                self._queue.put_nowait(_Since(since))
        self._in_step_at = listening_since
        if not first:
            log.info("listening for link changes again; caught up")
        self.ready.set()
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), self._keepalive)
            if closed.is_set():
                break
            # A round trip proves the connection alive, and notifications committed
            # before it have been delivered.
            self._in_step_at = await asyncio.wait_for(
                conn.fetchval("SELECT now()"), self._keepalive
            )
        log.warning("lost the link-changes connection; reconnecting")

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if text.startswith(changes.CREATED):
            if self._warm_on_create:
                noticed = time.perf_counter()
                for first, last in changes.parse_created(text):
                    self._queue.put_nowait(_IdRange(first, last, noticed))
            return
        if self.places.notified(text) or self.hosts.notified(text):
            return
        campaign = changes.parse_campaign(text)
        if campaign is not None:
            # Read and applied by the warmer, in order with the links it is warming.
            self._queue.put_nowait(_Campaign(*campaign))
            return
        self._cache.invalidate(text)
        self.invalidated += 1

    async def _catch_up(self, since: datetime) -> None:
        """Drop every token changed at or after `since` that we have not dropped for it yet."""
        for row in await changed_since(self._pool, since):
            token, updated_at = row["token"], row["updated_at"]
            if self._applied.get(token) != updated_at:
                self._applied[token] = updated_at
                self._cache.invalidate(token)
                self.invalidated += 1
        horizon = since - MARGIN
        for token in [t for t, at in self._applied.items() if at < horizon]:
            del self._applied[token]
        for row in await retargeted_since(self._pool, since):
            key = (row["account_id"], row["campaign"])
            if self._retargets.get(key) != row["changed_at"]:
                self._apply_retarget(row["account_id"], row["campaign"], row)
        for key in [k for k, at in self._retargets.items() if at < horizon]:
            del self._retargets[key]

    def _apply_retarget(self, account_id: int, campaign: str, row: asyncpg.Record) -> None:
        """Change the campaign's cached groups as its last retargeting says."""
        changed_at: datetime = row["changed_at"]
        self._retargets[account_id, campaign] = changed_at
        url_at, rules_at = row["url_changed_at"], row["rules_changed_at"]
        self.retargeted += self._cache.retarget(
            account_id,
            campaign,
            row["url"],
            None if url_at is None else epoch_ms(url_at),
            row["rules"],
            None if rules_at is None else epoch_ms(rules_at),
        )

    async def _retarget(self, item: _Campaign) -> None:
        row = await campaign_destination(self._pool, item.account_id, item.campaign)
        if row is not None:
            self._apply_retarget(item.account_id, item.campaign, row)

    # -- link-poll ---------------------------------------------------------------

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_every)
            try:
                now: datetime = await self._pool.fetchval("SELECT now()")
                await self._catch_up(self._poll_since)
                await self.places.reload(self._pool)
                await self.hosts.refresh(self._pool)
            except _DB_ERRORS as exc:
                log.warning("polling link changes failed", extra={"error": repr(exc)})
                continue
            self._poll_since = now - MARGIN

    # -- link-warmer -------------------------------------------------------------

    async def warm(self) -> None:
        retry = Retry(_RETRY, on=_DB_ERRORS)
        while True:
            item = await self._queue.get()
            while True:
                try:
                    if isinstance(item, _IdRange):
                        await self._warm_ids(item.first, item.last)
                        self.warm_seconds.observe(time.perf_counter() - item.noticed)
                    elif isinstance(item, _Campaign):
                        await self._retarget(item)
                    else:
                        await self._warm_since(item.moment)
                    retry.succeeded()
                    break
                except _DB_ERRORS as exc:
                    log.warning("warming the link cache failed", extra={"error": repr(exc)})
                    await retry.wait()

    async def _warm_since(self, since: datetime) -> None:
        """Warm the links created at or after `since`, the newest `capacity` of them."""
        first = await first_id_since(self._pool, since)
        if first is None:
            return
        last: int = await self._pool.fetchval("SELECT max(id) FROM links")
        # Room for the misses looked up meanwhile: a cache that overflows drops a
        # slice of itself, which must not be the window's newest (see _warm_ids).
        room = self._capacity - self._capacity // EVICT_FRACTION
        if partitions.period_of_id(first) == partitions.period_of_id(last):
            first = max(first, last - room + 1)
        else:  # the same on the sequence numbers (partitions.id_windows)
            skip = (last & partitions.SEQUENCE_MASK) - room + 1 - (first & partitions.SEQUENCE_MASK)
            first += max(0, skip)
        started = time.perf_counter()
        loaded = await self._warm_ids(first, last, newest_first=True)
        log.info(
            "link cache warmed",
            extra={
                "links": loaded,
                "since": since.isoformat(),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def _warm_ids(self, first: int, last: int, *, newest_first: bool = False) -> int:
        """Read ids first..last into the cache, a slice at a time; `newest_first` (a worker
        warming at start): the highest ids first, so the campaign being sent now is served
        from memory soonest, and then the slices are put back in id order (the cache drops
        the links stored longest ago first: the window's newest must go last)."""
        loaded = 0
        stored: list[list[str]] = []
        periods = None
        if partitions.period_of_id(first) != partitions.period_of_id(last):
            async with self._pool.acquire() as conn:
                existing = await partitions.partitions(conn, "links")
            periods = [p.low for p in existing if isinstance(p.low, int)]
        windows = partitions.id_windows(first, last, WARM_SLICE, periods)
        slices = iter(reversed(windows) if newest_first else windows)
        # The next slices are read while this one is stored: PostgreSQL works on them
        # (on another core) while we work on this one.
        reads: deque[asyncio.Task[tuple[int, list[asyncpg.Record]]]] = deque()

        def read_next() -> None:
            bounds = next(slices, None)
            if bounds is not None:
                reads.append(self._read_slice(*bounds))

        for _ in range(WARM_READS_AHEAD):
            read_next()
        try:
            while reads:
                generation, rows = await reads[0]
                reads.popleft()
                read_next()
                tokens = self._cache.store_rows(rows, generation)
                loaded += len(tokens)
                if newest_first:
                    stored.append(list(tokens))
                await asyncio.sleep(0)  # let requests in between slices
        finally:
            for read in reads:
                read.cancel()
            for read in reads:
                with contextlib.suppress(asyncio.CancelledError, *_DB_ERRORS):
                    await read
        for slice_tokens in reversed(stored):
            self._cache.stored_now(slice_tokens)
            await asyncio.sleep(0)
        self._cache.warmed += loaded
        return loaded

    def _read_slice(self, low: int, high: int) -> asyncio.Task[tuple[int, list[asyncpg.Record]]]:
        async def read() -> tuple[int, list[asyncpg.Record]]:
            generation = self._cache.generation  # before reading: see LinkCache.store_rows
            return generation, await fetch_id_range(self._pool, low, high)

        return asyncio.ensure_future(read())


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()


LISTENER = web.AppKey("link_listener", LinkListener)


def listener_context(config: RedirectConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: keep the app's cache warm and in step with link changes (after the cache)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        listener = LinkListener(
            require_database_url(config.service),
            app[POOL],
            app[CACHE],
            capacity=config.cache_entries,
            warm_window=config.warm_window,
            warm_on_create=config.warm_on_create,
            hosts=BrandedHosts(config.short_names()),
        )
        app[LISTENER] = listener
        spawn = app[SUPERVISOR].spawn
        tasks = [
            spawn("link-listener", listener.listen),
            spawn("link-warmer", listener.warm),
            spawn("link-poll", listener.poll),
            spawn("domain-reload", functools.partial(listener.hosts.run, app[POOL])),
        ]
        # Listening before the first request: a change made right after start is seen.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.ready.wait(), 10)
        yield
        for task in tasks:
            await task.stop()

    return context
