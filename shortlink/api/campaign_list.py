"""GET /v1/campaigns: every campaign of the account, newest first, cursor-paginated."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems
from shortlink.campaigns import summaries
from shortlink.pool import READ_POOL
from shortlink.timestamps import rfc3339

MAX_SEARCH = 200
MAX_CURSOR = 2000  # the longest a cursor of summaries.CURSOR can be, and more


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    """A campaign's summary as the API shows it: its times in RFC 3339."""
    return {
        **summary,
        "created_at": rfc3339(summary["created_at"]),
        "first_activity": rfc3339(summary["first_activity"]),
        "last_activity": rfc3339(summary["last_activity"]),
    }


async def list_campaigns(request: web.Request) -> web.Response:
    """GET /v1/campaigns?q=&cursor=&limit=: name, links, clicks, CTR, bots, activity."""
    problems = Problems()
    query = Fields(request.query, problems)
    limit = query.page_limit()
    search = query.text("q", max_length=MAX_SEARCH)
    cursor = query.converted(
        "cursor", query.text("cursor", max_length=MAX_CURSOR), summaries.CURSOR.checked
    )
    problems.check()
    items, next_cursor = await summaries.campaigns(
        request.app[READ_POOL],
        request[ACCOUNT_ID],
        search=search or None,
        cursor=cursor,
        limit=limit,
    )
    return web.json_response(
        {"campaigns": [_public(item) for item in items], "next_cursor": next_cursor},
        dumps=_dumps,
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
