"""Campaign statistics and click listings, read from what the forwarder records.

Statistics come from the pre-aggregated tables (campaign_stats,
campaign_breakdown, campaign_first_click) that the forwarder updates in the
same transaction that records the clicks, and campaign_conversions that the API
updates with each conversion it records (shortlink.conversions), so a stats
call reads a handful of rows however many clicks there are. The time to the first click is kept as a
histogram with buckets about 5% wide; median and p90 are read from it.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shortlink.db import Executor

_HISTOGRAM_BASE = math.log(1.05)

# Breakdowns (by_browser, by_os, by_device_type, by_country) are bounded whatever
# taps arrive (anyone can send any User-Agent): a campaign keeps at most VALUES_KEPT
# values per dimension (the recorder counts newer ones as OTHER), and statistics show
# the VALUES_SHOWN values with most clicks, the rest summed as OTHER. ua-parser's own
# name for what it does not know is also "Other": one row holds both.
VALUES_KEPT = 200
VALUES_SHOWN = 20
OTHER = "Other"


def first_click_bucket(shortened_at_ms: int, clicked_at_ms: int) -> int:
    """Histogram bucket of the time from shortening to the first click (~5% wide)."""
    seconds = max(0.0, (clicked_at_ms - shortened_at_ms) / 1000)
    return round(math.log1p(seconds) / _HISTOGRAM_BASE)


def bucket_seconds(bucket: int) -> float:
    """The time a histogram bucket stands for (its centre)."""
    return math.expm1(bucket * _HISTOGRAM_BASE)


def quantile(histogram: list[tuple[int, int]], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram of (bucket, count), or None if it is empty."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket, count in sorted(histogram):
        seen += count
        if seen >= rank:
            return round(bucket_seconds(bucket), 1)
    return round(bucket_seconds(max(b for b, _ in histogram)), 1)


async def campaign(conn: Executor, account_id: int, name: str) -> dict[str, Any] | None:
    """The campaign's statistics, or None when the account has no such campaign."""
    totals = await conn.fetchrow(
        """
        SELECT links, total_clicks, unique_clicks, bot_clicks, converted_links FROM campaign_stats
        WHERE account_id = $1 AND campaign = $2
        """,
        account_id,
        name,
    )
    if totals is None:
        return None
    breakdown = await conn.fetch(
        """
        WITH ranked AS (
            SELECT dimension, value, clicks,
                   value <> $4 AND row_number() OVER (
                       PARTITION BY dimension ORDER BY value = $4, clicks DESC, value
                   ) <= $3 AS shown
            FROM campaign_breakdown WHERE account_id = $1 AND campaign = $2
        )
        SELECT dimension, value, clicks FROM ranked WHERE shown
        UNION ALL
        SELECT dimension, $4, sum(clicks)::bigint FROM ranked WHERE NOT shown GROUP BY dimension
        ORDER BY clicks DESC, value
        """,
        account_id,
        name,
        VALUES_SHOWN,
        OTHER,
    )
    histogram = [
        (row["bucket"], row["links"])
        for row in await conn.fetch(
            """
            SELECT bucket, links FROM campaign_first_click
            WHERE account_id = $1 AND campaign = $2
            """,
            account_id,
            name,
        )
    ]
    by: dict[str, dict[str, int]] = {"browser": {}, "os": {}, "device_type": {}, "country": {}}
    for row in breakdown:
        by[row["dimension"]][row["value"]] = row["clicks"]
    links = totals["links"]
    converted = totals["converted_links"]
    return {
        "client_identifier": name,
        "links": links,
        "total_clicks": totals["total_clicks"],
        "unique_clicks": totals["unique_clicks"],
        "bot_clicks": totals["bot_clicks"],
        "click_through_rate": round(totals["unique_clicks"] / links, 4) if links else 0.0,
        "by_browser": by["browser"],
        "by_os": by["os"],
        "by_device_type": by["device_type"],
        "by_country": by["country"],
        "median_seconds_to_first_click": quantile(histogram, 0.5),
        "p90_seconds_to_first_click": quantile(histogram, 0.9),
        "conversions": await _conversions(conn, account_id, name, converted),
        "conversion_rate": round(converted / links, 4) if links else 0.0,
    }


async def _conversions(
    conn: Executor, account_id: int, name: str, converted: int
) -> dict[str, Any]:
    """The campaign's enterprise-posted conversions (link_click is unique_clicks);
    values are Decimal sums of positive conversions, by currency."""
    rows = await conn.fetch(
        """
        SELECT event, currency, positive, negative, value FROM campaign_conversions
        WHERE account_id = $1 AND campaign = $2 ORDER BY event, currency
        """,
        account_id,
        name,
    )
    by_event: dict[str, dict[str, int]] = {}
    value: dict[str, Decimal] = {}
    for row in rows:
        counts = by_event.setdefault(row["event"], {"positive": 0, "negative": 0})
        counts["positive"] += row["positive"]
        counts["negative"] += row["negative"]
        if row["currency"]:
            value[row["currency"]] = value.get(row["currency"], Decimal(0)) + row["value"]
    return {
        "positive": sum(counts["positive"] for counts in by_event.values()),
        "negative": sum(counts["negative"] for counts in by_event.values()),
        "by_event": by_event,
        "value": value,
        "converted_links": converted,
    }


class BadCursor(ValueError):
    """A pagination cursor this API did not make."""


# A cursor is the position of the last click of a page: its time in microseconds
# since 1970 and its event id. The pattern is the OpenAPI document's, so any
# cursor the document allows can be read (17 digits reach the year 5138).
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(clicked_at: datetime, event_id: str) -> str:
    micros = (clicked_at - _EPOCH) // _MICROSECOND
    return f"{micros}-{uuid.UUID(event_id).hex}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (clicked_at, event_id) position a cursor holds, or BadCursor."""
    if _CURSOR.fullmatch(cursor) is None:
        raise BadCursor("is not a cursor this API returned (next_cursor)")
    micros, _, event_id = cursor.partition("-")
    return _EPOCH + int(micros) * _MICROSECOND, str(uuid.UUID(event_id))


def valid_cursor(cursor: str) -> str:
    """`cursor` if it can be read, or BadCursor."""
    decode_cursor(cursor)
    return cursor


_CLICK_FIELDS = """
    c.event_id, c.link_id, c.phone_number, c.client_ref, c.clicked_at, c.client_ip, c.browser,
    c.os, c.device_type, c.device_name, c.device_manufacturer, c.is_bot, c.user_agent,
    c.referer, c.warning_page_served, c.method, c.country, c.region
"""


async def campaign_clicks(
    conn: Executor,
    account_id: int,
    name: str,
    *,
    phone_number: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the campaign's clicks, newest first, and the cursor of the next page."""
    after = decode_cursor(cursor) if cursor else None
    rows = await conn.fetch(
        f"""
        SELECT {_CLICK_FIELDS} FROM clicks c
        WHERE c.account_id = $1 AND c.client_identifier = $2
          AND ($3::text IS NULL OR c.link_id = ANY(
                SELECT id FROM links
                WHERE account_id = $1 AND client_identifier = $2 AND phone_number = $3))
          AND ($4::timestamptz IS NULL OR (c.clicked_at, c.event_id) < ($4, $5::uuid))
        ORDER BY c.clicked_at DESC, c.event_id DESC
        LIMIT $6
        """,
        account_id,
        name,
        phone_number,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    items = [_click(row) for row in rows[:limit]]
    next_cursor = (
        encode_cursor(rows[limit - 1]["clicked_at"], str(rows[limit - 1]["event_id"]))
        if len(rows) > limit
        else None
    )
    return items, next_cursor


def _click(row: Any) -> dict[str, Any]:
    return {
        "event_id": str(row["event_id"]),
        "tracking_url_id": row["link_id"],
        "phone_number": row["phone_number"],
        "client_ref": row["client_ref"],
        "clicked_at": row["clicked_at"].isoformat(),
        "ip": str(row["client_ip"]) if row["client_ip"] is not None else None,
        "country": row["country"],
        "region": row["region"],
        "browser": row["browser"],
        "os": row["os"],
        "device_type": row["device_type"],
        "device_name": row["device_name"],
        "device_manufacturer": row["device_manufacturer"],
        "is_bot": row["is_bot"],
        "user_agent": row["user_agent"],
        "referer": row["referer"],
        "warning_page_served": row["warning_page_served"],
        "method": row["method"],
    }
