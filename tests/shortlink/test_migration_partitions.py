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
