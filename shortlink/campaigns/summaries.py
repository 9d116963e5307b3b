"""The account's campaigns, each with its headline figures and activity; and one of them.

Campaigns come from campaign_stats, newest first by its campaign_stats_newest
index, keyset-paginated on (created_at, name); first and last activity from the
per-minute rollup campaign_minutes that the forwarder keeps. Links made without
a campaign are not a campaign here.
"""

from __future__ import annotations

from typing import Any

from shortlink.campaigns.cursor import CursorForm, from_micros, text, to_micros
from shortlink.db import Executor

# The position of the last campaign of a page: its start in microseconds since
# 1970 and its name's UTF-8. Every cursor of this form can be read (a name that
# is not UTF-8 or holds NUL is read with replacement characters and simply
# matches no campaign). The OpenAPI document's pattern.
CURSOR = CursorForm(r"^[0-9]{1,17}-(?:[0-9a-f]{2}){0,800}$")

_FIELDS = """
    s.campaign, s.links, s.total_clicks, s.unique_clicks, s.bot_clicks, s.created_at,
    (SELECT m.first_at FROM campaign_minutes m
     WHERE m.account_id = s.account_id AND m.campaign = s.campaign
     ORDER BY m.minute LIMIT 1) AS first_activity,
    (SELECT m.last_at FROM campaign_minutes m
     WHERE m.account_id = s.account_id AND m.campaign = s.campaign
     ORDER BY m.minute DESC LIMIT 1) AS last_activity
"""


def _like_pattern(search: str) -> str:
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _summary(row: Any) -> dict[str, Any]:
    links = row["links"]
    return {
        "client_identifier": row["campaign"],
        "links": links,
        "total_clicks": row["total_clicks"],
        "unique_clicks": row["unique_clicks"],
        "bot_clicks": row["bot_clicks"],
        "click_through_rate": round(row["unique_clicks"] / links, 4) if links else 0.0,
        "created_at": row["created_at"],
        "first_activity": row["first_activity"],
        "last_activity": row["last_activity"],
    }


async def campaigns(
    conn: Executor,
    account_id: int,
    *,
    search: str | None,
    cursor: str | None,
    limit: int,
    only: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the account's campaigns, newest first, and the next page's cursor
    (BadCursor for a cursor CURSOR cannot read).

    `search` keeps campaigns whose name contains it (any case); `only` keeps one
    campaign (a dashboard link for one campaign sees no other).
    """
    after_at, after_name = None, None
    if cursor is not None:
        micros, name = CURSOR.decode(cursor)
        after_at, after_name = from_micros(micros), text(name)
    rows = await conn.fetch(
        f"""
        SELECT {_FIELDS} FROM campaign_stats s
        WHERE s.account_id = $1 AND s.campaign <> ''
          AND ($2::text IS NULL OR s.campaign ILIKE $2)
          AND ($3::text IS NULL OR s.campaign = $3)
          AND ($4::timestamptz IS NULL OR (s.created_at, s.campaign) < ($4, $5::text))
        ORDER BY s.created_at DESC, s.campaign DESC
        LIMIT $6
        """,
        account_id,
        _like_pattern(search) if search else None,
        only,
        after_at,
        after_name,
        limit + 1,
    )
    page, next_cursor = CURSOR.page(
        rows, limit, lambda last: (to_micros(last["created_at"]), last["campaign"].encode())
    )
    return [_summary(row) for row in page], next_cursor


async def campaign(conn: Executor, account_id: int, name: str) -> dict[str, Any] | None:
    """One campaign's headline figures and activity, or None if the account has no such one."""
    row = await conn.fetchrow(
        f"""
        SELECT {_FIELDS} FROM campaign_stats s
        WHERE s.account_id = $1 AND s.campaign = $2 AND s.campaign <> ''
        """,
        account_id,
        name,
    )
    return None if row is None else _summary(row)


async def exists(conn: Executor, account_id: int, name: str) -> bool:
    """Whether the account has the campaign (one index lookup)."""
    found = await conn.fetchval(
        """
        SELECT true FROM campaign_stats
        WHERE account_id = $1 AND campaign = $2 AND campaign <> ''
        """,
        account_id,
        name,
    )
    return bool(found)
