"""/v1/conversions: the enterprise posts the conversions that happened out of our sight.

The link is named by its token or by its client_ref (the message id, which must
name exactly one of the account's links: 409 when it names several). What the
body may hold is shortlink.conversions' to check; the conversion, its counters
and the delivery for an endpoint that asked for conversions are stored in one
transaction, at most once per Idempotency-Key.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiohttp import web

from shortlink import conversions, tokens, validation
from shortlink.api import idempotency
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError, not_found
from shortlink.conversions import NewConversion
from shortlink.db import Connection
from shortlink.exceptions import AmbiguousClientRef, InvalidInput, LinkNotFound

_FIELDS = {
    "token",
    "client_ref",
    "event",
    "disposition",
    "value",
    "currency",
    "occurred_at",
    "metadata",
}


async def create(request: web.Request) -> web.Response:
    """POST /v1/conversions: record one conversion of one of the account's links."""
    account_id = request[ACCOUNT_ID]
    raw = await request.read()
    data = await json_object(request)
    now = datetime.now(UTC)
    problems = Problems()
    fields = Fields(data, problems, allowed=_FIELDS)
    token = fields.text("token", max_length=tokens.MAX_LENGTH)
    if token is not None and not tokens.is_token(token):
        problems.add("token", "is not a token (6 to 8 letters and digits)")
    client_ref = fields.text("client_ref", min_length=1, max_length=validation.MAX_TEXT_LENGTH)
    if fields.has("token") == fields.has("client_ref"):
        problems.add("token", "name the link by its token or by its client_ref (exactly one)")
    event = fields.converted(
        "event",
        fields.text("event", required=True, min_length=1, max_length=conversions.MAX_EVENT),
        conversions.event_name,
    )
    disposition = fields.converted(
        "disposition",
        fields.text("disposition", required=True, max_length=20),
        conversions.disposition,
    )
    value = fields.number("value", minimum=0, maximum=conversions.MAX_VALUE)
    currency = fields.converted(
        "currency", fields.text("currency", max_length=3), conversions.currency
    )
    if fields.has("value") != fields.has("currency"):
        missing = "currency" if fields.has("value") else "value"
        problems.add(missing, "value and currency are given together")
    when = now
    raw_when = fields.text("occurred_at", max_length=conversions.MAX_TIME_LENGTH)
    if raw_when is not None:
        try:
            when = conversions.occurred_at(raw_when, now=now)
        except InvalidInput as exc:
            problems.add("occurred_at", str(exc))
    stored_metadata = None
    if fields.has("metadata"):
        try:
            stored_metadata = conversions.metadata(data["metadata"])
        except InvalidInput as exc:
            problems.add("metadata", str(exc))
    problems.check()
    if event is None or disposition is None:  # pragma: no cover - required, checked above
        raise ApiError(422, "validation_failed", "event and disposition are required")
    new = NewConversion(event, disposition, value, currency, when, stored_metadata)

    async def action(conn: Connection) -> tuple[int, bytes]:
        try:
            link = await conversions.find_link(conn, account_id, token=token, client_ref=client_ref)
        except LinkNotFound:
            raise not_found("link") from None
        except AmbiguousClientRef as exc:
            raise ApiError(409, "ambiguous_client_ref", str(exc)) from None
        row = await conversions.record(conn, account_id, link, new)
        body = orjson.dumps(conversions.public(link, row), default=conversions.json_default)
        return 201, body

    return await idempotency.respond(request, account_id, raw, action)
