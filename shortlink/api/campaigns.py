"""/v1/campaigns/{client_identifier}: statistics and the clicks behind them."""

from __future__ import annotations

import orjson
from aiohttp import web

from shortlink import stats, validation
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.errors import ApiError, not_found
from shortlink.pool import POOL

MAX_PAGE = 1000


async def get_stats(request: web.Request) -> web.Response:
    """GET /v1/campaigns/{client_identifier}/stats, from the pre-aggregated counters."""
    result = await stats.campaign(
        request.app[POOL], request[ACCOUNT_ID], request.match_info["client_identifier"]
    )
    if result is None:
        raise not_found("campaign")
    return web.Response(body=orjson.dumps(result), content_type="application/json")


async def list_clicks(request: web.Request) -> web.Response:
    """GET /v1/campaigns/{client_identifier}/clicks: newest first, cursor-paginated."""
    query = request.query
    phone = query.get("phone_number")
    if phone is not None:
        try:
            phone = validation.phone_number(phone)
        except validation.InvalidInput as exc:
            raise ApiError(
                422,
                "validation_failed",
                f"phone_number: {exc}",
                [{"field": "phone_number", "message": str(exc)}],
            ) from None
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(
            422,
            "validation_failed",
            f"limit: must be an integer from 1 to {MAX_PAGE}",
            [{"field": "limit", "message": f"must be an integer from 1 to {MAX_PAGE}"}],
        )
    try:
        items, next_cursor = await stats.campaign_clicks(
            request.app[POOL],
            request[ACCOUNT_ID],
            request.match_info["client_identifier"],
            phone_number=phone,
            cursor=query.get("cursor"),
            limit=limit,
        )
    except stats.BadCursor as exc:
        raise ApiError(
            422, "validation_failed", f"cursor: {exc}", [{"field": "cursor", "message": str(exc)}]
        ) from None
    return web.Response(
        body=orjson.dumps({"clicks": items, "next_cursor": next_cursor}),
        content_type="application/json",
    )
