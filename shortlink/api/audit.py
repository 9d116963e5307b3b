"""GET /v1/audit (scope account:admin). The audit log is kept bounded by shortlink.purge."""

from __future__ import annotations

import orjson
from aiohttp import web

from shortlink import audit
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems
from shortlink.pool import POOL

MAX_CURSOR = 40
_PURGE_EVERY = 3600.0


async def list_entries(request: web.Request) -> web.Response:
    """GET /v1/audit?cursor=&limit=: the account's administrative changes, newest first."""
    problems = Problems()
    query = Fields(request.query, problems)
    limit = query.page_limit()
    cursor = query.converted(
        "cursor", query.text("cursor", max_length=MAX_CURSOR), audit.CURSOR.checked
    )
    problems.check()
    items, next_cursor = await audit.entries(
        request.app[POOL], request[ACCOUNT_ID], cursor=cursor, limit=limit
    )
    return web.Response(
        body=orjson.dumps({"entries": items, "next_cursor": next_cursor}),
        content_type="application/json",
    )
