"""One campaign's statistics, read from the counters (a handful of rows however many clicks).

Statistics come from the pre-aggregated tables (campaign_stats,
campaign_breakdown, campaign_first_click) that the forwarder updates in the
same transaction that records the clicks, and campaign_conversions that the API
updates with each conversion it records (shortlink.conversions). Their shape is
shortlink.campaigns.counters'.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shortlink.campaigns.counters import OTHER, VALUES_SHOWN, quantile
from shortlink.campaigns.destinations import by_destination
from shortlink.db import Executor


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
    histogram = await first_tap_histogram(conn, account_id, name)
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
        **await by_destination(conn, account_id, name),
    }


async def first_tap_histogram(conn: Executor, account_id: int, name: str) -> list[tuple[int, int]]:
    """(bucket, links) of the time from shortening to the first tap (counters' histogram)."""
    rows = await conn.fetch(
        "SELECT bucket, links FROM campaign_first_click WHERE account_id = $1 AND campaign = $2",
        account_id,
        name,
    )
    return [(row["bucket"], row["links"]) for row in rows]


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
