"""A campaign's clicks by variant and by rule (smart destinations, shortlink.rules).

Read from the clicks themselves (their variant_index and rule_index, through the
clicks_campaign index) and the conversions of the links clicked: an A/B test is
read off these, a few groups per campaign. Robots are left out, as everywhere in
the statistics.
"""

from __future__ import annotations

from typing import Any

import orjson

from shortlink.db import Executor

NONE = "none"  # the key of clicks without a variant (or without a matching rule)
_COLUMNS = {"variant": "variant_index", "rule": "rule_index"}


async def by_destination(conn: Executor, account_id: int, name: str) -> dict[str, Any]:
    """{"by_variant": ..., "by_rule": ...}: clicks, unique clicks, positive conversions
    and conversion rate per variant index and per rule index; both empty for a campaign
    that never had rules or variants (shortlink.links.mark_smart), whose clicks are not read."""
    row = await conn.fetchrow(
        "SELECT variants FROM campaign_destinations WHERE account_id = $1 AND campaign = $2",
        account_id,
        name,
    )
    if row is None:
        return {"by_variant": {}, "by_rule": {}}
    variants = row["variants"]
    urls = [v["url"] for v in orjson.loads(variants)] if variants else []
    answer: dict[str, Any] = {}
    for kind, column in _COLUMNS.items():
        rows = await conn.fetch(
            f"""
            WITH per AS (
                SELECT {column} AS k, count(*) AS clicks, count(DISTINCT link_id) AS uniques,
                       array_agg(DISTINCT link_id) AS ids,
                       min(coalesce(destination, target_url)) AS url
                FROM clicks
                WHERE account_id = $1 AND client_identifier = $2 AND NOT is_bot
                GROUP BY {column}
            )
            SELECT k, clicks, uniques, url,
                   (SELECT count(*) FROM conversions v WHERE v.link_id = ANY(per.ids)
                      AND v.disposition = 'positive' AND v.event <> 'link_click') AS positive,
                   (SELECT count(DISTINCT v.link_id) FROM conversions v
                    WHERE v.link_id = ANY(per.ids)
                      AND v.disposition = 'positive' AND v.event <> 'link_click') AS converted
            FROM per ORDER BY k NULLS FIRST
            """,
            account_id,
            name,
        )
        groups = {}
        for row in rows:
            index = row["k"]
            url = row["url"]
            if kind == "variant" and index is not None and index < len(urls):
                url = urls[index]
            groups[NONE if index is None else str(index)] = {
                "url": None if index is None and kind == "rule" else url,
                "clicks": row["clicks"],
                "unique_clicks": row["uniques"],
                "positive_conversions": row["positive"],
                "conversion_rate": round(row["converted"] / row["uniques"], 4)
                if row["uniques"]
                else 0.0,
            }
        answer[f"by_{kind}"] = groups
    return answer
