"""Every click and every recipient of a campaign, a batch at a time (the CSV files).

Each batch is its own keyset query, so an export holds no transaction open,
lends its connection back between batches and keeps the same memory at ten
million clicks: clicks walk the clicks_campaign index oldest first, recipients
are the dashboard's pages (shortlink.campaigns.recipients) of EXPORT_BATCH.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from shortlink.campaigns.recipients import recipients
from shortlink.db import Executor

EXPORT_BATCH = 5000

CLICK_COLUMNS = (
    "event_id",
    "tracking_url_id",
    "phone_number",
    "client_ref",
    "clicked_at",
    "ip",
    "browser",
    "os",
    "device_type",
    "device_name",
    "device_manufacturer",
    "is_bot",
    "user_agent",
    "referer",
    "warning_page_served",
    "method",
    "target_url",
    "country",
    "region",
    "destination",
    "rule_index",
    "variant_index",
)


async def all_clicks(
    conn: Executor, account_id: int, name: str, *, batch: int | None = None
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Every click of the campaign, oldest first, as rows of CLICK_COLUMNS, `batch` (by
    default EXPORT_BATCH, read at each call) at a time (keyset on clicks_campaign)."""
    batch = batch or EXPORT_BATCH
    after: tuple[datetime, Any] | None = None
    while True:
        rows = await conn.fetch(
            """
            SELECT event_id, link_id, phone_number, client_ref, clicked_at, client_ip, browser,
                   os, device_type, device_name, device_manufacturer, is_bot, user_agent,
                   referer, warning_page_served, method, target_url, country, region,
                   coalesce(destination, target_url), rule_index, variant_index
            FROM clicks
            WHERE account_id = $1 AND client_identifier = $2
              AND ($3::timestamptz IS NULL OR (clicked_at, event_id) > ($3, $4::uuid))
            ORDER BY clicked_at, event_id
            LIMIT $5
            """,
            account_id,
            name,
            after[0] if after else None,
            after[1] if after else None,
            batch,
        )
        if not rows:
            return
        yield [tuple(row.values()) for row in rows]
        if len(rows) < batch:
            return
        after = (rows[-1]["clicked_at"], rows[-1]["event_id"])


async def all_recipients(
    conn: Executor, account_id: int, name: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every recipient of the campaign, a batch at a time (for the CSV file)."""
    cursor = None
    while True:
        batch, cursor = await recipients(
            conn, account_id, name, phone_prefix=None, cursor=cursor, limit=EXPORT_BATCH
        )
        if batch:
            yield batch
        if cursor is None:
            return
