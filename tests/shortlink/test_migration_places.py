"""The click places migration: clicks gain country and region, and the campaigns counted
before it get their clicks by people as country 'unknown'."""

from __future__ import annotations

import asyncpg
import pytest

from shortlink import schema


async def test_counted_clicks_become_unknown_countries(empty_database_url: str) -> None:
    """by_country of an old campaign adds up to its clicks by people; new rows are checked."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        ours = next(m for m in migrations if m.name == "click_places")
        for migration in migrations[: ours.version - 1]:
            await conn.execute(migration.sql)
        await conn.execute(
            """
            INSERT INTO campaign_breakdown (account_id, campaign, dimension, value, clicks)
            VALUES (1, 'spring', 'browser', 'Mobile Safari', 7),
                   (1, 'spring', 'browser', 'Chrome Mobile', 3),
                   (1, 'spring', 'os', 'iOS', 7),
                   (2, '', 'browser', 'Other', 1)
            """
        )
        await conn.execute(ours.sql)
        rows = await conn.fetch(
            """
            SELECT account_id, campaign, value, clicks FROM campaign_breakdown
            WHERE dimension = 'country' ORDER BY account_id
            """
        )
        assert [tuple(r.values()) for r in rows] == [
            (1, "spring", "unknown", 10),
            (2, "", "unknown", 1),
        ]
        columns = await conn.fetch(
            """
            SELECT column_name FROM information_schema.columns
            WHERE table_name = 'clicks' AND column_name IN ('country', 'region')
            ORDER BY column_name
            """
        )
        assert [c["column_name"] for c in columns] == ["country", "region"]
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """
                INSERT INTO campaign_breakdown (account_id, campaign, dimension, value, clicks)
                VALUES (1, 'spring', 'planet', 'Earth', 1)
                """
            )
    finally:
        await conn.close()


async def test_clicks_recorded_before_keep_their_rows_and_old_writers_still_insert(
    empty_database_url: str,
) -> None:
    """On a database at 0009 with clicks: they stay, with null places; a forwarder of the
    previous release (its INSERT names no place) still records; a new row's country is
    checked."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        ours = next(m for m in migrations if m.name == "click_places")
        for migration in migrations[: ours.version - 1]:
            await conn.execute(migration.sql)
        insert = """
            INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method, client_ip,
                                browser, is_bot)
            VALUES (gen_random_uuid(), 1, 1, now(), 'GET', '145.97.39.155', 'Chrome', false)
        """
        for _ in range(3):
            await conn.execute(insert)
        await conn.execute(ours.sql)
        rows = await conn.fetch("SELECT country, region FROM clicks")
        assert [tuple(r.values()) for r in rows] == [(None, None)] * 3
        await conn.execute(insert)  # the previous release's forwarder, during the upgrade
        assert await conn.fetchval("SELECT count(*) FROM clicks WHERE country IS NULL") == 4
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """
                INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method, country)
                VALUES (gen_random_uuid(), 1, 1, now(), 'GET', 'A1')
                """
            )
    finally:
        await conn.close()


async def test_the_country_check_reads_no_clicks_already_there(empty_database_url: str) -> None:
    """clicks.country's CHECK is added NOT VALID: PostgreSQL checks the rows written after,
    and does not scan the table (every old row is null) under the ACCESS EXCLUSIVE lock.
    (Migration 0012 validates it later, to make clicks partitioned.)"""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        ours = next(m for m in migrations if m.name == "click_places")
        for migration in migrations[: ours.version]:
            await conn.execute(migration.sql)
        validated = await conn.fetchval(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'clicks_country_check'"
        )
        assert validated is False
    finally:
        await conn.close()
