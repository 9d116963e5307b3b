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
