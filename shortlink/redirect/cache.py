"""The redirect server's in-memory link cache.

A bounded map from token to the link's packed fields (shortlink.redirect.entries:
about 190 bytes a link, campaign-wide fields shared), filled two ways:

- **warmed**: links are loaded when they are created, before the SMS is sent
  (shortlink.redirect.listener), so a recipient's first tap is a hit;
- **on a miss**: concurrent misses are batched. Every token missed in one turn
  of the event loop goes into one `WHERE token = ANY($1)` query; while
  MAX_IN_FLIGHT queries are out, new misses gather for the next one, so a burst
  of cold taps becomes a few large queries instead of a queue of small ones
  waiting for pool connections. Concurrent misses of one token share a query.

A hit is one dict lookup, no I/O. When the cache is full, the links loaded
longest ago are dropped, a hundredth of the cache at a time (links are loaded
newest last, so this is close to "oldest campaign first"; a hit does not move a
link, which keeps the hit path to a lookup). Tokens known not to exist are kept
apart, for a short TTL, so a flood of random tokens cannot evict real links.

A change notification drops a token (invalidate). A load or warm-up that was
reading while a token was invalidated does not store what it read for that
token: every invalidation is stamped with a generation number, and stores check
it. Counters are plain integers, read when metrics are scraped.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import asyncpg
from aiohttp import web

from shortlink.clickevent import link_fields
from shortlink.links import fetch_rows
from shortlink.metrics import Buckets
from shortlink.pool import POOL
from shortlink.redirect.entries import GroupKey, Groups, LinkGroup, group_index, packed_prefix

# Loads the rows (shortlink.links.ENTRY_COLUMNS) of those tokens that exist.
BatchLoader = Callable[[list[str]], Awaitable[Sequence[asyncpg.Record]]]
# A row of shortlink.links.ENTRY_COLUMNS: an asyncpg Record, or a tuple in that order.
Row = Any

MAX_BATCH = 1000  # tokens per lookup query
MAX_IN_FLIGHT = 4  # lookup queries at once (the pool keeps connections for the rest)
EVICT_FRACTION = 100  # a full cache drops this fraction of itself at once
_INVALIDATIONS_KEPT = 10_000


class LinkCache:
    """Token -> packed link, with negative caching, batched loads and invalidation."""

    def __init__(
        self,
        loader: BatchLoader,
        *,
        max_entries: int,
        negative_max_entries: int,
        negative_ttl: float,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._max_entries = max_entries
        self._negative_max_entries = negative_max_entries
        self._negative_ttl = negative_ttl
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._entries: dict[str, bytes] = {}
        self.groups = Groups()
        self._negative: OrderedDict[str, float] = OrderedDict()  # token -> expiry (clock)
        # Misses waiting for a query, and those whose query is out: token -> its result.
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._loading: dict[str, asyncio.Future[bool]] = {}
        self._flush_scheduled = False
        self._in_flight = 0
        self._queries: set[asyncio.Task[None]] = set()
        # Generations: bumped by every invalidation; a store of data read at generation g
        # skips tokens invalidated after g (or everything, after a clear).
        self.generation = 0
        self._invalidated: OrderedDict[str, int] = OrderedDict()
        self._horizon = 0  # invalidations before this generation are forgotten
        self._cleared = 0
        # (account, campaign) -> the generation of its last retargeting (see retarget).
        self._retargeted: OrderedDict[tuple[int, str], int] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self.loads = 0  # lookup queries
        self.looked_up = 0  # tokens asked for by those queries
        self.coalesced = 0
        self.load_errors = 0
        self.warmed = 0
        self.evicted = 0
        self.load_seconds = Buckets()  # lookup queries, for the latency histogram

    def __len__(self) -> int:
        return len(self._entries)

    # -- the hit path ----------------------------------------------------------

    def get(self, token: str) -> bytes | None:
        """The packed link, or None on a miss. Never does I/O.

        The caller finds the link's group at `groups.items[group_index(packed)]`.
        """
        packed = self._entries.get(token)
        if packed is not None:
            self.hits += 1
        return packed

    def find(self, token: str) -> tuple[LinkGroup, bytes] | None:
        """The cached link's group and packed fields (for callers off the hot path)."""
        packed = self._entries.get(token)
        if packed is None:
            return None
        group = self.groups.items[group_index(packed)]
        return None if group is None else (group, packed)

    # -- misses ----------------------------------------------------------------

    async def lookup(self, token: str) -> tuple[LinkGroup, bytes] | None:
        """The link behind a token get() did not find: negative cache, else a batched load."""
        self.misses += 1
        expiry = self._negative.get(token)
        if expiry is not None:
            if expiry > self._clock():
                self.negative_hits += 1
                return None
            del self._negative[token]
        future = self._waiting.get(token) or self._loading.get(token)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[token] = future
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        else:
            self.coalesced += 1
        # shield: one caller giving up (client gone) must not cancel the load for the others.
        if not await asyncio.shield(future):
            return None
        return self.find(token)

    def _flush(self) -> None:
        """Send what waits as queries, as far as MAX_IN_FLIGHT allows."""
        self._flush_scheduled = False
        while self._waiting and self._in_flight < self._max_in_flight:
            batch = dict(itertools.islice(self._waiting.items(), self._max_batch))
            for token in batch:
                del self._waiting[token]
            self._loading.update(batch)
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._query(batch, self.generation))
            self._queries.add(task)
            task.add_done_callback(self._queries.discard)

    async def _query(self, batch: dict[str, asyncio.Future[bool]], generation: int) -> None:
        started = time.perf_counter()
        try:
            rows = await self._loader(list(batch))
            # Storing can fail too (a row the cache cannot pack): the waiters must hear of
            # it either way, or they and every later tap of their tokens would wait for ever.
            found = self.store_rows(rows, generation)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, which answers 503
            self.load_errors += 1
            for token, future in batch.items():
                self._loading.pop(token, None)
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: every caller may have gone away
            return
        finally:
            self._in_flight -= 1
            if self._waiting and not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        self.load_seconds.observe(time.perf_counter() - started)
        self.loads += 1
        self.looked_up += len(batch)
        for token, future in batch.items():
            self._loading.pop(token, None)
            if token not in found:
                self._remember_missing(token, generation)
            if not future.done():
                future.set_result(token in found)

    def _remember_missing(self, token: str, generation: int) -> None:
        if self._negative_ttl <= 0 or not self._trusted(token, generation):
            return
        self._negative[token] = self._clock() + self._negative_ttl
        self._negative.move_to_end(token)
        if len(self._negative) > self._negative_max_entries:
            self._negative.popitem(last=False)

    # -- storing ---------------------------------------------------------------

    def store_rows(self, rows: Iterable[Row], generation: int) -> set[str]:
        """Store rows (shortlink.links.ENTRY_COLUMNS) read at `generation`; the tokens stored."""
        stored = set()
        entries = self._entries
        groups = self.groups
        negative = self._negative
        current = generation == self.generation  # nothing invalidated since: all rows are
        # The rows of one request come one after the other and share their group: it is
        # looked up once per run of such rows, not per row.
        last_key: GroupKey | None = None
        index, prefix = 0, b""
        for row in rows:
            token = row[0]
            if not current and (
                not self._trusted(token, generation)
                or self._retargeted.get((row[2], row[6]), 0) > generation
            ):
                continue
            fields = link_fields(row[1], row[4], row[5])  # before the group counts it
            key = (
                row[2],
                row[3],
                row[6],
                row[7],
                row[8],
                row[9],
                row[10],
                row[11],
                row[12],
                row[13],
                row[14],
            )
            if key == last_key:
                groups.retain(index)
            else:
                index, last_key = groups.acquire(key), key
                prefix = packed_prefix(index)
            packed = prefix + fields
            old = entries.get(token)
            if old is not None:
                groups.release(group_index(old))
            entries[token] = packed
            negative.pop(token, None)
            stored.add(token)
        if len(entries) > self._max_entries:
            self._evict()
        return stored

    def stored_now(self, tokens: Iterable[str]) -> None:
        """Count those of `tokens` still cached as stored now, for the order of eviction."""
        entries = self._entries
        for token in tokens:
            packed = entries.pop(token, None)
            if packed is not None:
                entries[token] = packed

    def _trusted(self, token: str, generation: int) -> bool:
        """Whether data about `token` read at `generation` is still current."""
        if generation == self.generation:
            return True
        if generation < self._cleared or generation < self._horizon:
            return False
        invalidated = self._invalidated.get(token)
        return invalidated is None or invalidated <= generation

    def _evict(self) -> None:
        excess = len(self._entries) - self._max_entries
        count = max(excess, self._max_entries // EVICT_FRACTION)
        entries = self._entries
        for token in list(itertools.islice(entries, count)):
            self.groups.release(group_index(entries.pop(token)))
        self.evicted += count

    # -- changes ---------------------------------------------------------------

    def invalidate(self, token: str) -> None:
        """Forget what is known about `token`; the next request reads the database."""
        self.generation += 1
        self._invalidated[token] = self.generation
        self._invalidated.move_to_end(token)
        if len(self._invalidated) > _INVALIDATIONS_KEPT:
            _, forgotten = self._invalidated.popitem(last=False)
            self._horizon = forgotten
        packed = self._entries.pop(token, None)
        if packed is not None:
            self.groups.release(group_index(packed))
        self._negative.pop(token, None)
        # A query already out for it stores nothing for it (see _trusted); its waiters
        # still get the answer it read, which was current when they asked.

    def retarget(
        self,
        account_id: int,
        campaign: str,
        target_url: str | None,
        url_before_ms: int | None,
        rules: str | None,
        rules_before_ms: int | None,
    ) -> int:
        """A campaign was retargeted: change its cached groups in place (shortlink.links.
        retarget); a load that was reading meanwhile does not store the campaign's rows."""
        self.generation += 1
        self._retargeted[account_id, campaign] = self.generation
        self._retargeted.move_to_end((account_id, campaign))
        if len(self._retargeted) > _INVALIDATIONS_KEPT:
            _, forgotten = self._retargeted.popitem(last=False)
            self._horizon = max(self._horizon, forgotten)
        return self.groups.retarget(
            account_id, campaign, target_url, url_before_ms, rules, rules_before_ms
        )

    def clear(self) -> None:
        """Forget everything."""
        self.generation += 1
        self._cleared = self.generation
        self._entries.clear()
        self.groups.clear()
        self._negative.clear()


CACHE = web.AppKey("link_cache", LinkCache)


def cache_context(
    *, max_entries: int, negative_max_entries: int, negative_ttl: float, max_in_flight: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: a LinkCache that loads from the app's database pool."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        pool = app[POOL]

        async def load(tokens: list[str]) -> Sequence[asyncpg.Record]:
            return await fetch_rows(pool, tokens)

        app[CACHE] = LinkCache(
            load,
            max_entries=max_entries,
            negative_max_entries=negative_max_entries,
            negative_ttl=negative_ttl,
            max_in_flight=max_in_flight,
        )
        yield

    return context
