"""GET /v1/campaigns: every campaign of the account, newest first, cursor-paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from shortlink import validation
from shortlink.api import insights
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.errors import ApiError
from shortlink.pool import POOL

MAX_PAGE = 1000
MAX_SEARCH = 200


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422, "validation_failed", f"{field}: {message}", [{"field": field, "message": message}]
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in item.items()
    }


async def list_campaigns(request: web.Request) -> web.Response:
    """GET /v1/campaigns?q=&cursor=&limit=: name, links, clicks, CTR, bots, activity."""
    query = request.query
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise _invalid("limit", f"must be an integer from 1 to {MAX_PAGE}")
    search = query.get("q")
    if search is not None:
        if len(search) > MAX_SEARCH:
            raise _invalid("q", f"at most {MAX_SEARCH} characters")
        try:
            validation.text(search)
        except validation.InvalidInput as exc:
            raise _invalid("q", str(exc)) from None
    try:
        items, next_cursor = await insights.campaigns(
            request.app[POOL],
            request[ACCOUNT_ID],
            search=search or None,
            cursor=query.get("cursor"),
            limit=limit,
        )
    except insights.BadCursor as exc:
        raise _invalid("cursor", str(exc)) from None
    return web.json_response(
        {"campaigns": [_public(item) for item in items], "next_cursor": next_cursor},
        dumps=_dumps,
    )
