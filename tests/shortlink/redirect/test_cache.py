"""The link cache: LRU bounds, negative entries, coalesced loads, invalidation."""

from __future__ import annotations

import asyncio

import pytest

from shortlink.links import LinkEntry
from shortlink.redirect.cache import LinkCache


def entry(token: str) -> LinkEntry:
    return LinkEntry(1, token, 1, "https://example.com/", None, None, None, 0, 4e9, False, False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A loader over a dict that counts its calls and can be held back."""

    def __init__(self, tokens: set[str]) -> None:
        self.tokens = tokens
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, token: str) -> LinkEntry | None:
        self.calls += 1
        await self.gate.wait()
        return entry(token) if token in self.tokens else None


def make(store: Store, clock: Clock | None = None, size: int = 3) -> LinkCache:
    return LinkCache(
        store, max_entries=size, negative_max_entries=2, negative_ttl=5.0, clock=clock or Clock()
    )


async def test_least_recently_used_entry_is_evicted() -> None:
    """With room for three, touching A keeps it while B, the oldest untouched, is evicted."""
    store = Store({"AAAAAA", "BBBBBB", "CCCCCC", "DDDDDD"})
    cache = make(store)
    for token in ("AAAAAA", "BBBBBB", "CCCCCC"):
        await cache.lookup(token)
    assert cache.get("AAAAAA") is not None
    await cache.lookup("DDDDDD")
    assert cache.get("BBBBBB") is None
    assert all(cache.get(t) for t in ("AAAAAA", "CCCCCC", "DDDDDD"))
    assert len(cache) == 3


async def test_unknown_tokens_are_remembered_for_the_ttl() -> None:
    """An unknown token is answered from memory until its TTL passes, then asked again."""
    clock = Clock()
    store = Store(set())
    cache = make(store, clock)
    assert await cache.lookup("NoSuch") is None
    assert await cache.lookup("NoSuch") is None
    assert store.calls == 1
    clock.now = 5.1
    assert await cache.lookup("NoSuch") is None
    assert store.calls == 2


async def test_negative_entries_are_bounded_apart_from_links() -> None:
    """A flood of unknown tokens neither grows without bound nor evicts real links."""
    store = Store({"Real01"})
    cache = make(store)
    await cache.lookup("Real01")
    for i in range(50):
        await cache.lookup(f"Nope{i:02d}")
    assert cache.get("Real01") is not None
    assert len(cache._negative) == 2


async def test_concurrent_misses_share_one_load() -> None:
    """Twenty concurrent lookups of one token make one load and all get the link."""
    store = Store({"Shared"})
    store.gate.clear()
    cache = make(store)
    waiters = [asyncio.create_task(cache.lookup("Shared")) for _ in range(20)]
    await asyncio.sleep(0.01)
    store.gate.set()
    results = await asyncio.gather(*waiters)
    assert store.calls == 1
    assert all(r is not None and r.token == "Shared" for r in results)
    assert cache.coalesced == 19


async def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    """The first caller giving up does not cancel the load the others wait on."""
    store = Store({"Shared"})
    store.gate.clear()
    cache = make(store)
    first = asyncio.create_task(cache.lookup("Shared"))
    second = asyncio.create_task(cache.lookup("Shared"))
    await asyncio.sleep(0.01)
    first.cancel()
    store.gate.set()
    assert (await second) is not None
    assert cache.get("Shared") is not None


async def test_load_errors_reach_every_waiter_and_are_not_cached() -> None:
    """A failing load raises in each waiting caller and the next lookup tries again."""
    calls = 0

    async def broken(token: str) -> LinkEntry | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise OSError("database down")

    cache = LinkCache(broken, max_entries=3, negative_max_entries=2, negative_ttl=5.0)
    results = await asyncio.gather(
        *(cache.lookup("Failing") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)
    with pytest.raises(OSError, match="database down"):
        await cache.lookup("Failing")
    assert calls == 2
    assert cache.load_errors == 2


async def test_invalidate_drops_the_entry_and_a_load_in_flight() -> None:
    """After invalidate, the next lookup reads again; a load begun before it is not stored."""
    store = Store({"Change"})
    cache = make(store)
    await cache.lookup("Change")
    cache.invalidate("Change")
    assert cache.get("Change") is None
    store.gate.clear()
    stale = asyncio.create_task(cache.lookup("Change"))
    await asyncio.sleep(0.01)
    cache.invalidate("Change")
    store.gate.set()
    await stale
    assert cache.get("Change") is None
    assert store.calls == 2
