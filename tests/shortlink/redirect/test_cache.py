"""The link cache: bounds, compact entries, negative entries, batched loads, invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from shortlink.redirect.cache import LinkCache
from shortlink.redirect.entries import group_index, unpack
from tests.infra import wait_until


def row(token: str, link_id: int = 1, campaign: str = "spring", **changes: Any) -> tuple[Any, ...]:
    """A row of ENTRY_COLUMNS."""
    fields = {
        "account_id": 7,
        "target_url": f"https://example.com/{campaign}",
        "phone_number": f"4477009{link_id:05d}",
        "client_ref": f"m{link_id}",
        "created_at_ms": 1_700_000_000_000,
        "expires_at": 4e9,
        "unsafe": False,
        "disabled": False,
        **changes,
    }
    return (
        token,
        link_id,
        fields["account_id"],
        fields["target_url"],
        fields["phone_number"],
        fields["client_ref"],
        campaign,
        fields["created_at_ms"],
        fields["expires_at"],
        fields["unsafe"],
        fields["disabled"],
        fields.get("expired_url"),
        fields.get("rules"),
        fields.get("variant"),
        fields.get("domain"),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A batch loader over a dict that records its queries and can be held back."""

    def __init__(self, tokens: set[str]) -> None:
        self.tokens = tokens
        self.queries: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, tokens: list[str]) -> Sequence[Any]:
        self.queries.append(tokens)
        await self.gate.wait()
        return [row(t, n) for n, t in enumerate(tokens) if t in self.tokens]


def make(store: Store, clock: Clock | None = None, size: int = 3, **options: Any) -> LinkCache:
    return LinkCache(
        store,
        max_entries=size,
        negative_max_entries=2,
        negative_ttl=5.0,
        clock=clock or Clock(),
        **options,
    )


async def test_a_lookup_stores_the_link_and_a_hit_needs_no_query() -> None:
    """After one load the link is a hit: group and packed fields give back every field."""
    store = Store({"AAAAAA"})
    cache = make(store)
    found = await cache.lookup("AAAAAA")
    assert found is not None
    group, packed = found
    assert cache.get("AAAAAA") == packed
    assert cache.groups.items[group_index(packed)] is group
    assert (group.account_id, group.target_url, group.client_identifier) == (
        7,
        "https://example.com/spring",
        "spring",
    )
    assert unpack(packed) == (0, "447700900000", "m0")
    assert (cache.hits, cache.misses, len(store.queries)) == (1, 1, 1)


async def test_the_oldest_loaded_links_make_room() -> None:
    """With room for three, the link loaded first is dropped when a fourth comes."""
    cache = make(Store(set()))
    cache.store_rows([row(t, i) for i, t in enumerate(["AAAAAA", "BBBBBB", "CCCCCC"])], 0)
    assert cache.get("AAAAAA") is not None
    cache.store_rows([row("DDDDDD", 4)], 0)
    assert cache.get("AAAAAA") is None
    assert all(cache.get(t) for t in ("BBBBBB", "CCCCCC", "DDDDDD"))
    assert (len(cache), cache.evicted) == (3, 1)


async def test_a_campaign_shares_one_group_and_freed_groups_are_reused() -> None:
    """Links created together share their group; when the last one goes, so does the group."""
    cache = make(Store(set()), size=10)
    cache.store_rows([row(f"Tok{i:03d}", i) for i in range(5)], 0)
    assert len(cache.groups) == 1
    cache.store_rows([row("Other1", 9, campaign="autumn")], 0)
    assert len(cache.groups) == 2
    for i in range(5):
        cache.invalidate(f"Tok{i:03d}")
    assert len(cache.groups) == 1
    cache.store_rows([row("Other2", 10, campaign="winter")], 0)
    assert len(cache.groups.items) == 2  # the freed slot was taken again


async def test_interleaved_campaigns_in_one_store_count_every_link_of_each_group() -> None:
    """Rows of two groups, in runs and alternating, a row that cannot be packed among them:
    each group lives exactly as long as its last link, and the bad row counts for none."""
    cache = make(Store(set()), size=100)
    rows = [row(f"Spr{i:03d}", i) for i in range(3)]
    rows += [row(f"Aut{i:03d}", 10 + i, campaign="autumn") for i in range(2)]
    rows += [row("Spr100", 100), row("Aut100", 110, campaign="autumn"), row("Spr101", 101)]
    cache.store_rows(rows, 0)
    with pytest.raises(TypeError):
        cache.store_rows([row("Bad000", None), row("Bad001", None)], 0)  # type: ignore[arg-type]
    assert len(cache.groups) == 2
    assert unpack(cache.get("Aut100") or b"") == (110, "447700900110", "m110")
    for token in ["Spr000", "Spr001", "Spr002", "Spr100"]:
        cache.invalidate(token)
    assert len(cache.groups) == 2  # Spr101 still needs the spring group
    cache.invalidate("Spr101")
    assert len(cache.groups) == 1
    for token in ["Aut000", "Aut001", "Aut100"]:
        cache.invalidate(token)
    assert len(cache.groups) == 0


async def test_unknown_tokens_are_remembered_for_the_ttl() -> None:
    """An unknown token is answered from memory until its TTL passes, then asked again."""
    store = Store(set())
    clock = Clock()
    cache = make(store, clock)
    assert await cache.lookup("Nope01") is None
    assert await cache.lookup("Nope01") is None
    assert (len(store.queries), cache.negative_hits) == (1, 1)
    clock.now = 6.0
    assert await cache.lookup("Nope01") is None
    assert len(store.queries) == 2


async def test_unknown_tokens_never_evict_real_links() -> None:
    """A flood of unknown tokens fills only the negative cache."""
    store = Store({"Real01"})
    cache = make(store)
    await cache.lookup("Real01")
    for i in range(50):
        await cache.lookup(f"Fake{i:02d}")
    assert cache.get("Real01") is not None


async def test_concurrent_misses_become_one_query() -> None:
    """Misses in one turn of the event loop, of one or many tokens, make a single query."""
    store = Store({"Shared", "Other1", "Other2"})
    cache = make(store, size=10)
    results = await asyncio.gather(
        *(cache.lookup(t) for t in ["Shared"] * 10 + ["Other1", "Other2", "Absent"])
    )
    assert len(store.queries) == 1
    assert sorted(store.queries[0]) == ["Absent", "Other1", "Other2", "Shared"]
    assert [r is not None for r in results] == [True] * 12 + [False]
    assert cache.coalesced == 9


async def test_misses_gather_while_queries_are_out() -> None:
    """With the query slots busy, later misses wait and then go out together."""
    store = Store({f"Tok{i:03d}" for i in range(40)})
    cache = make(store, size=100, max_in_flight=1)
    store.gate.clear()
    first = asyncio.ensure_future(cache.lookup("Tok000"))
    await wait_until(lambda: len(store.queries) == 1, within=5)
    later = [asyncio.ensure_future(cache.lookup(f"Tok{i:03d}")) for i in range(1, 40)]
    # Every later miss was taken and the flush that would send them has run.
    await wait_until(lambda: cache.misses == 40 and not cache._flush_scheduled, within=5)
    assert len(store.queries) == 1  # the rest wait for the slot
    store.gate.set()
    await asyncio.gather(first, *later)
    assert [len(q) for q in store.queries] == [1, 39]


async def test_a_failed_query_reaches_every_waiter_and_is_counted() -> None:
    """A lookup query that raises makes each waiting lookup raise, and counts one error."""

    async def broken(tokens: list[str]) -> Sequence[Any]:
        raise OSError("database down")

    cache = LinkCache(broken, max_entries=3, negative_max_entries=2, negative_ttl=5.0)
    results = await asyncio.gather(
        cache.lookup("AAAAAA"), cache.lookup("BBBBBB"), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)
    assert cache.load_errors == 1
    with pytest.raises(OSError, match="database down"):
        await cache.lookup("AAAAAA")


async def test_a_row_that_cannot_be_stored_reaches_every_waiter() -> None:
    """A loaded row the cache cannot pack (a link id that is not a number) makes the lookups raise,
    instead of leaving them, and every later lookup of the token, waiting for ever."""

    async def odd(tokens: list[str]) -> Sequence[Any]:
        return [(t, None, *row(t, 0)[2:]) for t in tokens]

    cache = LinkCache(odd, max_entries=3, negative_max_entries=2, negative_ttl=5.0)
    results = await asyncio.wait_for(
        asyncio.gather(cache.lookup("AAAAAA"), cache.lookup("BBBBBB"), return_exceptions=True), 5
    )
    assert all(isinstance(r, TypeError) for r in results)
    assert cache.load_errors == 1
    with pytest.raises(TypeError):
        await asyncio.wait_for(cache.lookup("AAAAAA"), 5)


async def test_an_invalidation_during_a_load_is_not_undone() -> None:
    """A link changed while its lookup was out is not stored from the stale answer."""
    store = Store({"Change", "Keep01"})
    cache = make(store)
    store.gate.clear()
    pending = asyncio.gather(cache.lookup("Change"), cache.lookup("Keep01"))
    await wait_until(lambda: len(store.queries) == 1, within=5)  # the lookup is out
    cache.invalidate("Change")
    store.gate.set()
    await pending
    assert cache.get("Change") is None
    assert cache.get("Keep01") is not None


async def test_rows_read_before_an_invalidation_are_not_stored_for_that_token() -> None:
    """A warm-up slice read at an older generation skips the tokens invalidated since."""
    cache = make(Store(set()), size=10)
    generation = cache.generation
    cache.invalidate("Change")
    stored = cache.store_rows([row("Change", 1), row("Fresh1", 2)], generation)
    assert stored == {"Fresh1"}
    assert cache.get("Change") is None
