"""The dashboard migration: campaigns get a start time and a per-minute series from old clicks."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from shortlink import schema


async def test_backfill_from_recorded_clicks(empty_database_url: str) -> None:
    """Clicks recorded before the migration become rows of campaign_minutes; first taps too."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        dashboard = next(m for m in migrations if m.name == "dashboard")
        for migration in migrations[: dashboard.version - 1]:
            await conn.execute(migration.sql)
        await conn.execute(
            """
            INSERT INTO accounts (name) VALUES ('old');
            INSERT INTO links (token, account_id, target_url, client_identifier, created_at)
            VALUES ('Abc1234', 1, 'https://x.example/', 'old', '2026-01-01 10:00:00+00');
            INSERT INTO first_clicks (link_id, clicked_at) VALUES (1, '2026-01-01 10:05:30+00');
            INSERT INTO campaign_stats (account_id, campaign, links) VALUES (1, 'old', 1);
            INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method, is_bot,
                                client_identifier)
            VALUES (gen_random_uuid(), 1, 1, '2026-01-01 10:05:30+00', 'GET', false, 'old'),
                   (gen_random_uuid(), 1, 1, '2026-01-01 10:05:50+00', 'GET', true, 'old'),
                   (gen_random_uuid(), 1, 1, '2026-01-01 11:00:01+00', 'GET', false, 'old');
            """
        )
        await conn.execute(dashboard.sql)
        rows = await conn.fetch(
            "SELECT minute, taps, first_taps, bot_taps, first_at, last_at FROM campaign_minutes"
            " ORDER BY minute"
        )
        started = await conn.fetchval("SELECT created_at FROM campaign_stats")
    finally:
        await conn.close()

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    assert started == at("2026-01-01 10:00:00")
    assert [tuple(row) for row in rows] == [
        (at("2026-01-01 10:05:00"), 1, 1, 1, at("2026-01-01 10:05:30"), at("2026-01-01 10:05:50")),
        (at("2026-01-01 11:00:00"), 1, 0, 0, at("2026-01-01 11:00:01"), at("2026-01-01 11:00:01")),
    ]
