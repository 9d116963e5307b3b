"""Bulk link creation: order, defaults, and collisions resolved by the database."""

from __future__ import annotations

import asyncio
import calendar
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shortlink import links, tokens
from shortlink.exceptions import TokenSpaceExhausted
from shortlink.links import LinkEntry, NewLink, create_links, fetch_entry
from tests.infra import wait_until


async def test_bulk_create_returns_links_in_input_order(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Five thousand links come back in request order with their own rows."""
    specs = [
        NewLink(f"https://example.com/{i}", phone_number=f"4477009{i:05d}", client_ref=f"m{i}")
        for i in range(5000)
    ]
    created = await create_links(db, account_id, specs)
    assert len(created) == 5000
    rows = await db.fetch(
        "SELECT id, token, target_url, client_ref, expires_at - created_at AS lifetime "
        "FROM links WHERE id = ANY($1::bigint[])",
        [c.id for c in created],
    )
    by_id = {r["id"]: r for r in rows}
    for i, link in enumerate(created):
        row = by_id[link.id]
        assert row["token"] == link.token
        assert row["target_url"] == f"https://example.com/{i}"
        assert row["client_ref"] == f"m{i}"
        assert row["lifetime"] == timedelta(days=90)
    assert len({c.token for c in created}) == 5000


async def test_colliding_tokens_are_retried(
    db: asyncpg.Connection, account_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token that already exists is not reused: the row gets a fresh one."""
    [existing] = await create_links(db, account_id, [NewLink("https://example.com/a")])
    real = tokens.generate
    fresh = existing.token[0] + "resh01"  # the same period's tag
    rounds = iter([[existing.token, fresh]])

    def rigged(count: int, length: int = 7, tag: str = "") -> list[str]:
        try:
            return next(rounds)[:count]
        except StopIteration:
            return real(count, length, tag)

    monkeypatch.setattr(links.tokens, "generate", rigged)
    created = await create_links(
        db, account_id, [NewLink("https://example.com/b"), NewLink("https://example.com/c")]
    )
    assert existing.token not in {c.token for c in created}
    assert fresh in {c.token for c in created}
    assert (await fetch_entry_target(db, existing.token)) == "https://example.com/a"


async def fetch_entry_target(db: asyncpg.Connection, token: str) -> str:
    return str(await db.fetchval("SELECT target_url FROM links WHERE token = $1", token))


async def test_exhausted_token_space_creates_nothing(
    db: asyncpg.Connection, account_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If every fresh token keeps colliding, the call fails and no link of it is kept."""
    [existing] = await create_links(db, account_id, [NewLink("https://example.com/a")])
    monkeypatch.setattr(
        links.tokens, "generate", lambda count, length=7, tag="": [existing.token] * count
    )
    before = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", account_id)
    with pytest.raises(TokenSpaceExhausted):
        await create_links(db, account_id, [NewLink("https://example.com/x")])
    after = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", account_id)
    assert before == after


async def test_fetch_entry_reads_what_a_click_needs(
    database_url: str, db: asyncpg.Connection, account_id: int
) -> None:
    """fetch_entry returns the link's fields with times as epoch values."""
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=100)
    [created] = await create_links(
        db,
        account_id,
        [NewLink("https://example.com/e", "447700900001", "ref", "camp", expires, unsafe=True)],
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        entry = await fetch_entry(pool, created.token)
        assert await fetch_entry(pool, "Missing") is None
    finally:
        await pool.close()
    assert entry is not None
    assert (entry.id, entry.account_id, entry.target_url) == (
        created.id,
        account_id,
        "https://example.com/e",
    )
    assert (entry.phone_number, entry.client_ref, entry.client_identifier) == (
        "447700900001",
        "ref",
        "camp",
    )
    assert entry.created_at_ms == links.epoch_ms(created.created_at)
    assert entry.expires_at == expires.timestamp()
    assert entry.unsafe is True
    assert entry.disabled is False
    spec = NewLink("https://example.com/e", "447700900001", "ref", "camp", expires, unsafe=True)
    assert LinkEntry.made(account_id, created, spec) == entry  # what the cache reads back


def test_epoch_ms_is_exact() -> None:
    """Milliseconds since the epoch are truncated exactly, never rounded up by float error."""
    moment = datetime(2013, 10, 17, 9, 2, 13, 999999, tzinfo=UTC)
    assert links.epoch_ms(moment) == calendar.timegm(moment.utctimetuple()) * 1000 + 999


async def test_a_click_stamped_before_its_link_still_counts(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A redirect server whose clock is behind the API's stamps a click before its link's
    creation: the link's click count still has it."""
    [created] = await create_links(db, account_id, [NewLink("https://example.com/skew")])
    await db.execute(
        """
        INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method)
        VALUES (gen_random_uuid(), $1, $2, $3::timestamptz - interval '2 seconds', 'GET')
        """,
        created.id,
        account_id,
        created.created_at,
    )
    row = await links.find(db, account_id, created.token)
    assert row is not None
    assert row["clicks"] == 1


async def test_a_changed_expiry_is_cut_to_a_year_after_creation(
    db: asyncpg.Connection, account_id: int
) -> None:
    """PATCHing an expiry beyond MAX_LIFETIME_DAYS after creation keeps the link inside
    its token tag's cycle; changing only its target leaves the expiry alone."""
    [created] = await create_links(db, account_id, [NewLink("https://example.com/x")])
    far = datetime.now(UTC) + timedelta(days=800)
    assert await links.update(db, account_id, created.token, expires_at=far)
    row = await links.find(db, account_id, created.token)
    assert row is not None
    assert row["expires_at"] - row["created_at"] == timedelta(days=365)
    assert await links.update(db, account_id, created.token, target_url="https://example.com/y")
    again = await links.find(db, account_id, created.token)
    assert again is not None
    assert again["expires_at"] == row["expires_at"]


async def test_a_retarget_waits_for_links_of_the_campaign_being_made_and_changes_them(
    db: asyncpg.Connection, database_url: str, account_id: int
) -> None:
    """Links of a campaign whose creation commits while the campaign is retargeted are
    changed too (the retarget waits for them), not left on the old url in the database
    while the workers' in-place change, made for links created before it, says otherwise."""
    sending = await asyncpg.connect(database_url)
    try:
        async with sending.transaction():
            [made] = await create_links(
                sending, account_id, [NewLink("https://old.example/", client_identifier="mid")]
            )

            async def retarget() -> int:
                async with db.transaction():
                    return await links.retarget(
                        db, account_id, "mid", target_url="https://new.example/"
                    )

            changing = asyncio.ensure_future(retarget())

            async def waiting_or_done() -> bool:
                return changing.done() or await sending.fetchval(
                    "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )

            await wait_until(waiting_or_done)
        assert await changing == 1
    finally:
        await sending.close()
    assert await db.fetchval("SELECT target_url FROM links WHERE id = $1", made.id) == (
        "https://new.example/"
    )
