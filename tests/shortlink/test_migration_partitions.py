"""The partitioning migration: the links and clicks made before it stay where they are
(the legacy partitions), are found as before, and no new token repeats an old one."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from shortlink import links, partitions, schema, tokens
from shortlink.links import NewLink, create_links, fetch_entry


async def test_links_and_clicks_made_before_stay_and_are_found(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old links keep their ids and tokens and answer lookups; old clicks stay counted; a new
    link never takes an old link's token, even one that starts with this week's tag."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        ours = next(m for m in migrations if m.name == "partitions")
        for migration in migrations[: ours.version - 1]:
            await conn.execute(migration.sql)
        account = await conn.fetchval("INSERT INTO accounts (name) VALUES ('old') RETURNING id")
        this_week = partitions.tag(partitions.period_of(datetime.now(UTC)))
        old_token = this_week + "0ld123"
        old_id = await conn.fetchval(
            """
            INSERT INTO links (token, account_id, target_url, phone_number)
            VALUES ($1, $2, 'https://example.com/old', '447700900123') RETURNING id
            """,
            old_token,
            account,
        )
        await conn.execute(
            """
            INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method)
            VALUES (gen_random_uuid(), $1, $2, now() - interval '3 days', 'GET')
            """,
            old_id,
            account,
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(empty_database_url)
    try:
        # Apply ours and the rest as `shortlink migrate` does.
        for migration in migrations[ours.version - 1 :]:
            await conn.execute(migration.sql)
        await partitions.ensure(conn)
        row = await conn.fetchrow(
            "SELECT id, period, tableoid::regclass::text AS part FROM links WHERE token = $1",
            old_token,
        )
        assert (row["id"], row["period"], row["part"]) == (old_id, 0, "links_legacy")
        assert await conn.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", old_id) == 1
        pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=1)
        try:
            entry = await fetch_entry(pool, old_token)
        finally:
            await pool.close()
        assert entry is not None
        assert entry.target_url == "https://example.com/old"

        # Changing an old link's target leaves its expiry alone (even beyond a year).
        await conn.execute(
            "UPDATE links SET expires_at = '2030-01-01Z' WHERE id = $1 AND period = 0", old_id
        )
        assert await links.update(conn, account, old_token, target_url="https://example.com/o2")
        assert await conn.fetchval(
            "SELECT expires_at FROM links WHERE id = $1 AND period = 0", old_id
        ) == datetime(2030, 1, 1, tzinfo=UTC)

        real = tokens.generate
        rounds = iter([[old_token]])

        def rigged(count: int, length: int = 7, tag: str = "") -> list[str]:
            return next(rounds, None) or real(count, length, tag)

        monkeypatch.setattr(links.tokens, "generate", rigged)
        [created] = await create_links(conn, account, [NewLink("https://example.com/new")])
        assert created.token != old_token
        assert partitions.period_of_id(created.id) == partitions.period_of(created.created_at)
        assert created.id > old_id
    finally:
        await conn.close()


async def _at_version_11(url: str) -> tuple[asyncpg.Connection, schema.Migration]:
    conn = await asyncpg.connect(url)
    migrations = schema.load_migrations()
    ours = next(m for m in migrations if m.name == "partitions")
    for migration in migrations[: ours.version - 1]:
        await conn.execute(migration.sql)
    return conn, ours


async def test_a_click_dated_after_this_month_stays_with_the_old_clicks(
    empty_database_url: str,
) -> None:
    """A click a clock ahead dated into next month does not stop the migration: the legacy
    partition ends after it."""
    conn, ours = await _at_version_11(empty_database_url)
    try:
        account = await conn.fetchval("INSERT INTO accounts (name) VALUES ('a') RETURNING id")
        link = await conn.fetchval(
            "INSERT INTO links (token, account_id, target_url)"
            " VALUES ('ahead12', $1, 'https://e.example') RETURNING id",
            account,
        )
        await conn.execute(
            """
            INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method)
            VALUES (gen_random_uuid(), $1, $2,
                    date_trunc('month', now()) + interval '1 month 3 days', 'GET')
            """,
            link,
            account,
        )
        await conn.execute(ours.sql)
        [legacy] = [p for p in await partitions.partitions(conn, "clicks")]
        clicked = await conn.fetchval("SELECT clicked_at FROM clicks")
        assert isinstance(legacy.high, datetime)
        assert clicked < legacy.high
    finally:
        await conn.close()


async def test_what_was_made_beforehand_is_not_made_again(empty_database_url: str) -> None:
    """The large-database path: indexes and checks made online beforehand, as
    docs/operations.md says, are used by the migration, not built a second time."""
    conn, ours = await _at_version_11(empty_database_url)
    try:
        for statement in (
            "ALTER TABLE links ADD COLUMN period integer NOT NULL DEFAULT 0",
            "CREATE UNIQUE INDEX CONCURRENTLY links_legacy_id_period ON links (id, period)",
            "CREATE UNIQUE INDEX CONCURRENTLY links_legacy_token_period ON links (token, period)",
            "CREATE INDEX CONCURRENTLY links_legacy_expires ON links USING brin (expires_at)",
            "ALTER TABLE links ADD CONSTRAINT links_legacy_period CHECK (period = 0) NOT VALID",
            "ALTER TABLE links VALIDATE CONSTRAINT links_legacy_period",
            "ALTER TABLE links ADD CONSTRAINT links_id_period_check CHECK (id >> 40 = period)"
            " NOT VALID",
            "ALTER TABLE links VALIDATE CONSTRAINT links_id_period_check",
            "CREATE UNIQUE INDEX CONCURRENTLY clicks_legacy_event_clicked"
            " ON clicks (event_id, clicked_at)",
            "ALTER TABLE clicks VALIDATE CONSTRAINT clicks_country_check",
            "ALTER TABLE clicks ADD CONSTRAINT clicks_legacy_bound"
            " CHECK (clicked_at < '2040-01-01Z') NOT VALID",
            "ALTER TABLE clicks VALIDATE CONSTRAINT clicks_legacy_bound",
        ):
            await conn.execute(statement)
        await conn.execute(ours.sql)
        indexes = sorted(
            row["indexrelid"]
            for row in await conn.fetch(
                "SELECT indexrelid::regclass::text FROM pg_index"
                " WHERE indrelid = 'links_legacy'::regclass"
            )
        )
        assert indexes == [
            "links_legacy_account_campaign_phone",
            "links_legacy_account_client_ref",
            "links_legacy_expires",
            "links_legacy_pkey",  # links_legacy_id_period, renamed as it became the key
            "links_legacy_token_key",  # links_legacy_token_period
            "links_legacy_updated",
        ]
        [legacy] = await partitions.partitions(conn, "clicks")
        assert legacy.high == datetime(2040, 1, 1, tzinfo=UTC)
    finally:
        await conn.close()
