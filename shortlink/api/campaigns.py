"""/v1/campaigns/{client_identifier}/stats and .../clicks: statistics and the clicks behind them."""

from __future__ import annotations

import orjson
from aiohttp import web

from shortlink import conversions, validation
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems
from shortlink.api.errors import not_found
from shortlink.campaigns import clicks, stats
from shortlink.pool import READ_POOL


def campaign_of_path(request: web.Request) -> str:
    """The {client_identifier} of the path, 422 when it could not be a campaign's name."""
    problems = Problems()
    name = Fields(request.match_info, problems).text(
        "client_identifier", max_length=validation.MAX_TEXT_LENGTH
    )
    problems.check()
    if name is None:  # pragma: no cover - a path part is never missing
        raise not_found("campaign")
    return name


async def get_stats(request: web.Request) -> web.Response:
    """GET /v1/campaigns/{client_identifier}/stats, from the pre-aggregated counters."""
    result = await stats.campaign(
        request.app[READ_POOL], request[ACCOUNT_ID], campaign_of_path(request)
    )
    if result is None:
        raise not_found("campaign")
    return web.Response(
        body=orjson.dumps(result, default=conversions.json_default),
        content_type="application/json",
    )


async def list_clicks(request: web.Request) -> web.Response:
    """GET /v1/campaigns/{client_identifier}/clicks: newest first, cursor-paginated."""
    name = campaign_of_path(request)
    problems = Problems()
    query = Fields(request.query, problems)
    phone = query.converted(
        "phone_number",
        query.text("phone_number", max_length=validation.MAX_PHONE_LENGTH),
        validation.phone_number,
    )
    cursor = query.converted("cursor", query.text("cursor", max_length=100), clicks.CURSOR.checked)
    limit = query.page_limit()
    problems.check()
    items, next_cursor = await clicks.campaign_clicks(
        request.app[READ_POOL],
        request[ACCOUNT_ID],
        name,
        phone_number=phone,
        cursor=cursor,
        limit=limit,
    )
    return web.Response(
        body=orjson.dumps({"clicks": items, "next_cursor": next_cursor}),
        content_type="application/json",
    )
