"""The conversions migration: links tapped before it get their link_click conversion, and an
account's endpoint stays one while callbacks are added beside it."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from shortlink import schema


async def test_backfill_and_endpoints_after_the_migration(empty_database_url: str) -> None:
    """First taps in first_clicks and in links.first_clicked_at become link_click conversions;
    the previous release's endpoint upsert still works and never meets a callback."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        ours = next(m for m in migrations if m.name == "conversions_and_callbacks")
        for migration in migrations[: ours.version - 1]:
            await conn.execute(migration.sql)
        await conn.execute(
            """
            INSERT INTO accounts (name) VALUES ('old');
            INSERT INTO links (token, account_id, target_url, first_clicked_at)
            VALUES ('Abc1234', 1, 'https://x.example/', NULL),
                   ('Abc1235', 1, 'https://x.example/', '2026-01-01 09:00:00+00'),
                   ('Abc1236', 1, 'https://x.example/', NULL);
            INSERT INTO first_clicks (link_id, clicked_at) VALUES (1, '2026-01-01 10:05:30+00');
            INSERT INTO endpoints (account_id, url, format, mode)
            VALUES (1, 'https://hooks.example/', 'json', 'every');
            """
        )
        await conn.execute(ours.sql)
        rows = await conn.fetch(
            "SELECT link_id, event, disposition, occurred_at FROM conversions ORDER BY link_id"
        )
        await conn.execute(
            """
            INSERT INTO endpoints (callback_account_id, url, format, mode)
            VALUES (1, 'https://cb.example/', 'clickthru', 'first')
            """
        )
        # The previous release's PUT /v1/endpoint, word for word.
        await conn.execute(
            """
            INSERT INTO endpoints (account_id, url, format, mode, secret, enabled)
            VALUES (1, 'https://hooks.example/v2', 'xml', 'first', NULL, true)
            ON CONFLICT (account_id) DO UPDATE SET url = excluded.url
            """
        )
        account_rows = await conn.fetch("SELECT url FROM endpoints WHERE account_id = 1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """
                INSERT INTO endpoints (callback_account_id, url, format, mode)
                VALUES (1, 'https://cb.example/', 'clickthru', 'first')
                """
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """
                INSERT INTO endpoints (account_id, callback_account_id, url, format, mode)
                VALUES (1, 1, 'https://both.example/', 'clickthru', 'first')
                """
            )
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [
        (1, "link_click", "positive", datetime(2026, 1, 1, 10, 5, 30, tzinfo=UTC)),
        (2, "link_click", "positive", datetime(2026, 1, 1, 9, 0, tzinfo=UTC)),
    ]
    assert [row["url"] for row in account_rows] == ["https://hooks.example/v2"]
