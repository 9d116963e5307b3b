"""Keeping the cache warm and in step: created links arrive before the first tap, changes
arrive even when notifications are lost, and the listening connection is checked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from shortlink import links
from shortlink.links import NewLink, create_links, fetch_rows
from shortlink.redirect import listener as listener_module
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.cache import CACHE, LinkCache
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.listener import LISTENER, LinkListener
from tests.infra import DatabaseProxy, RunningServer, running, tap, wait_until


async def test_links_created_after_start_are_cached_before_their_first_tap(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A bulk create reaches the running worker's cache with no tap, so every first tap
    is a hit and no lookup query runs."""
    cache = redirect_server.app[CACHE]
    made = await create_links(
        db, account_id, [NewLink("https://example.com/w", f"44770090{i:04d}") for i in range(500)]
    )
    await wait_until(lambda: all(cache.get(link.token) for link in made), within=10)
    loads_before = cache.loads
    statuses = [await tap(redirect_server, link.token) for link in made[:20]]
    assert statuses == [302] * 20
    assert cache.loads == loads_before


async def test_a_worker_started_later_warms_the_recent_window_newest_first_bounded(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At start a worker loads the links created within WARM_WINDOW, at most its cache size
    (the newest), the newest slice first, and not older ones; then the oldest of them are
    the first to be dropped."""
    monkeypatch.setattr(listener_module, "WARM_SLICE", 10)
    slices: list[list[int]] = []
    store_rows = LinkCache.store_rows

    def recording(self: LinkCache, rows: Sequence[Any], generation: int) -> set[str]:
        slices.append(sorted(row["id"] for row in rows))
        return store_rows(self, rows, generation)

    monkeypatch.setattr(LinkCache, "store_rows", recording)
    old = await create_links(db, account_id, [NewLink("https://example.com/old")] * 5)
    await db.execute(
        "UPDATE links SET created_at = now() - interval '7 hours' WHERE id = ANY($1::bigint[])",
        [link.id for link in old],
    )
    recent = await create_links(db, account_id, [NewLink("https://example.com/new")] * 60)
    env = {**redirect_env, "WARM_WINDOW": "6h", "LINK_CACHE_ENTRIES": "40"}
    async with running(create_app(RedirectConfig.from_env(env)), make_handler) as server:
        cache = server.app[CACHE]
        newest = recent[-40:]
        await wait_until(lambda: all(cache.get(link.token) for link in newest), within=10)
        assert not any(cache.get(link.token) for link in old)
        assert not any(cache.get(link.token) for link in recent[:20])
        assert cache.loads == 0
        assert slices == [[link.id for link in newest[i : i + 10]] for i in (30, 20, 10, 0)]
        # Then the window is back in id order: a link created now, which overflows the
        # cache, pushes out one of the oldest slice, not of the newest.
        oldest = slices[-1]
        [extra] = await create_links(db, account_id, [NewLink("https://example.com/extra")])
        await wait_until(lambda: cache.get(extra.token) is not None, within=10)
        dropped = [link.id for link in newest if cache.get(link.token) is None]
        assert len(dropped) == 1
        assert dropped[0] in oldest


async def test_with_warming_off_nothing_is_loaded_ahead(
    cold_redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """WARM_ON_CREATE=false: a created link is read only when it is first tapped."""
    listener = cold_redirect_server.app[LISTENER]
    await asyncio.wait_for(listener.ready.wait(), 10)
    [link, other] = await create_links(
        db, account_id, [NewLink("https://example.com/cold"), NewLink("https://example.com/x")]
    )
    # A change notified after the creation: once it is applied, so was the creation.
    invalidated = listener.invalidated
    assert await links.disable(db, account_id, other.token)
    await wait_until(lambda: listener.invalidated > invalidated)
    cache = cold_redirect_server.app[CACHE]
    assert cache.get(link.token) is None
    assert await tap(cold_redirect_server, link.token) == 302
    assert cache.loads == 1


@asynccontextmanager
async def listening(
    database_url: str, listen_url: str, **options: Any
) -> AsyncIterator[tuple[LinkListener, LinkCache]]:
    """A LinkListener of our own whose LISTEN connection goes to `listen_url`."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)

    async def load(tokens: list[str]) -> Sequence[Any]:
        return await fetch_rows(pool, tokens)

    cache = LinkCache(load, max_entries=1000, negative_max_entries=10, negative_ttl=0)
    listener = LinkListener(
        listen_url,
        pool,
        cache,
        capacity=1000,
        warm_window=timedelta(0),
        warm_on_create=True,
        **options,
    )
    tasks = [
        asyncio.create_task(listener.listen()),
        asyncio.create_task(listener.warm()),
        asyncio.create_task(listener.poll()),
    ]
    try:
        yield listener, cache
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    """A proxy to the session's database that can silence its connections."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_a_silently_dead_connection_is_noticed_and_missed_changes_caught_up(
    database_url: str, proxy: DatabaseProxy, db: asyncpg.Connection, account_id: int
) -> None:
    """When the LISTEN connection goes silent, the keepalive notices, the listener
    reconnects and drops the links that changed meanwhile (their notifications are lost)."""
    async with listening(database_url, proxy.url, keepalive=0.3, poll_every=3600) as (
        listener,
        cache,
    ):
        await asyncio.wait_for(listener.ready.wait(), 10)
        [link] = await create_links(db, account_id, [NewLink("https://example.com/a")])
        await wait_until(lambda: cache.get(link.token) is not None, within=10)
        dropped_after_reconnects: list[int] = []
        invalidate = cache.invalidate

        def noting(token: str) -> None:
            if token == link.token:
                dropped_after_reconnects.append(listener.reconnects)
            invalidate(token)

        cache.invalidate = noting  # type: ignore[method-assign]
        proxy.freeze()
        assert await links.disable(db, account_id, link.token)
        await wait_until(lambda: cache.get(link.token) is None, within=10)
        # The notification never arrived: the link was dropped by the catch-up after a reconnect.
        assert dropped_after_reconnects[0] >= 1


async def test_changes_before_the_first_listen_are_applied(
    database_url: str, proxy: DatabaseProxy, db: asyncpg.Connection, account_id: int
) -> None:
    """A link cached and then changed before the listener could first connect is dropped
    when it does connect."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/b")])
    proxy.refusing = True  # the listener cannot connect yet
    async with listening(database_url, proxy.url, poll_every=3600) as (listener, cache):
        cache.store_rows(await fetch_rows(db, [link.token]), cache.generation)
        assert await links.disable(db, account_id, link.token)
        await wait_until(lambda: proxy.refused >= 1, what="the listener tried to connect")
        assert not listener.ready.is_set()
        assert cache.get(link.token) is not None
        proxy.refusing = False
        await asyncio.wait_for(listener.ready.wait(), 10)
        assert cache.get(link.token) is None


async def test_the_poll_applies_changes_when_notifications_cannot_be_received(
    database_url: str, proxy: DatabaseProxy, db: asyncpg.Connection, account_id: int
) -> None:
    """With LISTEN impossible, the periodic poll still drops changed links within seconds."""
    proxy.refusing = True
    async with listening(database_url, proxy.url, poll_every=0.3) as (listener, cache):
        [link] = await create_links(db, account_id, [NewLink("https://example.com/c")])
        cache.store_rows(await fetch_rows(db, [link.token]), cache.generation)
        assert await links.update(db, account_id, link.token, target_url="https://example.com/d")
        await wait_until(lambda: cache.get(link.token) is None, within=10)
        assert not listener.listening
