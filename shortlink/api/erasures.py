"""/v1/erasures: erase one phone number's data from the account (shortlink.erasures)."""

from __future__ import annotations

import orjson
from aiohttp import web

from shortlink import audit, erasures, validation
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError
from shortlink.pool import POOL


async def create(request: web.Request) -> web.Response:
    """POST /v1/erasures: 201 with what was changed (zeros when there was nothing left)."""
    data = await json_object(request)
    problems = Problems()
    fields = Fields(data, problems, allowed={"phone_number"})
    phone = fields.converted(
        "phone_number",
        fields.text("phone_number", required=True, max_length=validation.MAX_PHONE_LENGTH),
        validation.phone_number,
    )
    problems.check()
    if phone is None:  # pragma: no cover - required, checked above
        raise ApiError(422, "validation_failed", "phone_number: is required")
    async with request.app[POOL].acquire() as conn:
        erasure = await erasures.erase(conn, request[ACCOUNT_ID], phone)
        # Its own entry once the erasure is done (it works in many transactions); the
        # number is never in it.
        await audit.record(
            conn,
            request[ACCOUNT_ID],
            request.get(KEY_ID),
            client_address(request),
            "erasure.made",
            erasure.public(),
        )
    return web.Response(
        status=201, body=orjson.dumps(erasure.public()), content_type="application/json"
    )
