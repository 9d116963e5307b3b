"""/v1/erasures: erase one phone number's data from the account (shortlink.erasures)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from shortlink import audit, erasures, validation
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError, not_found
from shortlink.api.keys import API_CONFIG
from shortlink.exceptions import ErasureTaken
from shortlink.pool import POOL
from shortlink.supervise import SUPERVISOR

_ERASURE_ID = re.compile(r"[1-9][0-9]{0,17}")


async def create(request: web.Request) -> web.Response:
    """POST /v1/erasures: 201 with what was changed (zeros when there was nothing left)
    when it is done within the budget; else 202 with its id, the rest done by the erasure
    job (GET /v1/erasures/{erasure_id} follows it)."""
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
    account_id = request[ACCOUNT_ID]
    owner = uuid.uuid4()
    async with request.app[POOL].acquire() as conn:
        erasure_id = await erasures.start(conn, account_id, phone, owner)
        try:
            erasure = await erasures.run(
                conn, erasure_id, owner, budget=request.app[API_CONFIG].erasure_budget
            )
        except ErasureTaken:  # this request was too slow to keep it: the job has it
            erasure = None
        # Its own entry once the erasure is made (it works in many transactions); the
        # number is never in it. An erasure left to the job is recorded with its id.
        await audit.record(
            conn,
            account_id,
            request.get(KEY_ID),
            client_address(request),
            "erasure.made",
            erasure.public() if erasure is not None else {"erasure_id": erasure_id},
        )
    if erasure is None:
        return web.Response(
            status=202,
            body=orjson.dumps({"erasure_id": erasure_id, "status": "running"}),
            content_type="application/json",
            headers={"Location": f"/v1/erasures/{erasure_id}"},
        )
    return web.Response(
        status=201, body=orjson.dumps(erasure.public()), content_type="application/json"
    )


async def get(request: web.Request) -> web.Response:
    """GET /v1/erasures/{erasure_id}: the erasure, running or done, with its counts so far."""
    raw = request.match_info["erasure_id"]
    if _ERASURE_ID.fullmatch(raw) is None:
        raise not_found("erasure")
    async with request.app[POOL].acquire() as conn:
        found = await erasures.state(conn, request[ACCOUNT_ID], int(raw))
    if found is None:
        raise not_found("erasure")
    return web.Response(body=orjson.dumps(found), content_type="application/json")


async def job_context(app: web.Application) -> AsyncIterator[None]:
    """The erasure job (shortlink.erasures.job), supervised, for as long as the app runs:
    erasures a request left unfinished, or whose runner stopped, are carried on."""
    task = app[SUPERVISOR].spawn("erasures", lambda: erasures.job(app[POOL]))
    yield
    await task.stop()
