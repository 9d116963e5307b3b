"""The redirect server's in-memory link cache.

A bounded LRU of LinkEntry by token (a hit costs one dict lookup and a
move-to-end, no I/O), a separate bounded set of tokens known not to exist (kept
for a short TTL so a scanner or a typo does not reach PostgreSQL on every
request, and kept apart so a flood of random tokens cannot evict real links),
and coalesced loads: concurrent misses for one token share a single query.

Counters are plain integers, read when metrics are scraped: the hot path must
not pay for a metrics library.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from shortlink import invalidation
from shortlink.config import ServiceConfig
from shortlink.db import require_database_url
from shortlink.links import LinkEntry, fetch_entry
from shortlink.metrics import Buckets
from shortlink.pool import POOL
from shortlink.supervise import SUPERVISOR

Loader = Callable[[str], Awaitable[LinkEntry | None]]


class LinkCache:
    """LRU of links by token with negative caching and coalesced loads."""

    def __init__(
        self,
        loader: Loader,
        *,
        max_entries: int,
        negative_max_entries: int,
        negative_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._max_entries = max_entries
        self._negative_max_entries = negative_max_entries
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._entries: OrderedDict[str, LinkEntry] = OrderedDict()
        self._negative: OrderedDict[str, float] = OrderedDict()  # token -> expiry (clock)
        self._loading: dict[str, asyncio.Task[LinkEntry | None]] = {}
        # Bumped by invalidate(): a load that started before it must not store its result.
        self._generation = 0
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self.loads = 0
        self.coalesced = 0
        self.load_errors = 0
        self.load_seconds = Buckets()  # database lookups, for the latency histogram

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> LinkEntry | None:
        """The cached link, or None on a miss. Never does I/O."""
        entry = self._entries.get(token)
        if entry is not None:
            self._entries.move_to_end(token)
            self.hits += 1
        return entry

    async def lookup(self, token: str) -> LinkEntry | None:
        """The link behind a token not found by get(): negative cache, else one shared load."""
        self.misses += 1
        expiry = self._negative.get(token)
        if expiry is not None:
            if expiry > self._clock():
                self.negative_hits += 1
                return None
            del self._negative[token]
        task = self._loading.get(token)
        if task is None:
            task = asyncio.ensure_future(self._load(token, self._generation))
            self._loading[token] = task
            task.add_done_callback(self._load_done)
        else:
            self.coalesced += 1
        # shield: one caller giving up (client gone) must not cancel the load for the others.
        return await asyncio.shield(task)

    async def _load(self, token: str, generation: int) -> LinkEntry | None:
        started = time.perf_counter()
        try:
            entry = await self._loader(token)
            self.load_seconds.observe(time.perf_counter() - started)
        except Exception:
            self.load_errors += 1
            raise
        finally:
            if self._loading.get(token) is asyncio.current_task():
                del self._loading[token]
        self.loads += 1
        if generation == self._generation:
            self._store(token, entry)
        return entry

    @staticmethod
    def _load_done(task: asyncio.Task[LinkEntry | None]) -> None:
        # Mark the exception as retrieved: every caller may have gone away.
        if not task.cancelled():
            task.exception()

    def _store(self, token: str, entry: LinkEntry | None) -> None:
        if entry is None:
            if self._negative_ttl <= 0:
                return
            self._negative[token] = self._clock() + self._negative_ttl
            self._negative.move_to_end(token)
            if len(self._negative) > self._negative_max_entries:
                self._negative.popitem(last=False)
            return
        self._entries[token] = entry
        self._entries.move_to_end(token)
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def put(self, entry: LinkEntry) -> None:
        """Insert a link directly (used to warm the cache)."""
        self._negative.pop(entry.token, None)
        self._store(entry.token, entry)

    def invalidate(self, token: str) -> None:
        """Forget what is known about `token`; the next request reads the database."""
        self._generation += 1
        self._entries.pop(token, None)
        self._negative.pop(token, None)
        self._loading.pop(token, None)

    def clear(self) -> None:
        """Forget everything (for example after losing change notifications)."""
        self._generation += 1
        self._entries.clear()
        self._negative.clear()
        self._loading.clear()


CACHE = web.AppKey("link_cache", LinkCache)


def cache_context(
    *, max_entries: int, negative_max_entries: int, negative_ttl: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: a LinkCache that loads from the app's database pool."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        pool = app[POOL]

        async def load(token: str) -> LinkEntry | None:
            return await fetch_entry(pool, token)

        app[CACHE] = LinkCache(
            load,
            max_entries=max_entries,
            negative_max_entries=negative_max_entries,
            negative_ttl=negative_ttl,
        )
        yield

    return context


def listener_context(
    service: ServiceConfig,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: keep the app's cache in step with link changes (after cache_context)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        cache = app[CACHE]
        ready = asyncio.Event()
        task = app[SUPERVISOR].spawn(
            "link-listener",
            lambda: invalidation.listen(
                require_database_url(service), cache.invalidate, cache.clear, ready
            ),
        )
        # Listening before the first request: a change made right after start is seen.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), 10)
        yield
        await task.stop()

    return context
