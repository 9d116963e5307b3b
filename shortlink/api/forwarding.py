"""/v1/endpoint and /v1/deliveries: where clicks go, and what happened to them."""

from __future__ import annotations

import re
import uuid

import orjson
from aiohttp import web

from shortlink import audit, deliveries, endpoints, validation
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError, ValidationFailed, not_found
from shortlink.api.keys import API_CONFIG, RESOLVER
from shortlink.exceptions import EndpointError
from shortlink.pool import POOL

# A Standard Webhooks secret: whsec_ and the base64 of 24 to 64 bytes (the document's pattern).
WHSEC_PATTERN = (
    r"^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)?"
    r"|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/]{2}==)?)$"
)
_WHSEC = re.compile(WHSEC_PATTERN)


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


async def get_endpoint(request: web.Request) -> web.Response:
    """GET /v1/endpoint: the account's endpoint (never its secret)."""
    endpoint = await endpoints.get_endpoint(request.app[POOL], request[ACCOUNT_ID])
    if endpoint is None:
        raise not_found("endpoint")
    return _json(endpoint.public())


async def put_endpoint(request: web.Request) -> web.Response:
    """PUT /v1/endpoint: create or replace it."""
    data = await json_object(request)
    problems = Problems()
    fields = Fields(
        data, problems, allowed={"url", "format", "mode", "secret", "enabled", "conversions"}
    )
    url = fields.converted(
        "url", fields.text("url", required=True, max_length=endpoints.MAX_URL_LENGTH), _http_url
    )
    format_ = fields.text("format", default="json", max_length=20)
    mode = fields.text("mode", default="every", max_length=20)
    secret = fields.converted("secret", fields.text("secret", max_length=200), _secret)
    enabled = fields.boolean("enabled", True)
    wants_conversions = fields.boolean("conversions", False)
    problems.check()
    account_id = request[ACCOUNT_ID]
    try:
        async with request.app[POOL].acquire() as conn, conn.transaction():
            endpoint = await endpoints.set_endpoint(
                conn,
                account_id,
                url=url or "",
                format=format_ or "json",
                mode=mode or "every",
                secret=secret,
                enabled=enabled,
                allow_private=request.app[API_CONFIG].service.allow_private_endpoints,
                conversions=wants_conversions,
                resolver=request.app[RESOLVER],
                dns_timeout=request.app[API_CONFIG].service.endpoint_dns_timeout,
            )
            await audit.record(
                conn,
                account_id,
                request.get(KEY_ID),
                client_address(request),
                "endpoint.changed",
                endpoint.public(),
            )
    except EndpointError as exc:
        raise ValidationFailed([{"field": exc.field, "message": exc.message}]) from None
    return _json(endpoint.public())


def _secret(value: str) -> str:
    if _WHSEC.fullmatch(value) is None:
        raise ValueError("must be whsec_ followed by the base64 of 24 to 64 bytes")
    return value


def _http_url(value: str) -> str:
    """The endpoint URL as given, once it has the form the document states."""
    validation.endpoint_url(value)
    return value


async def list_deliveries(request: web.Request) -> web.Response:
    """GET /v1/deliveries?status=pending|delivered|dead&limit=..."""
    problems = Problems()
    query = Fields(request.query, problems)
    status = query.text("status", max_length=20)
    if status is not None and status not in deliveries.STATUSES:
        problems.add("status", f"must be one of {', '.join(deliveries.STATUSES)}")
    limit = query.page_limit()
    problems.check()
    items = await deliveries.list_deliveries(
        request.app[POOL], request[ACCOUNT_ID], status=status, limit=limit
    )
    return _json({"deliveries": items})


async def retry(request: web.Request) -> web.Response:
    """POST /v1/deliveries/{request_identifier}/retry: send a dead letter again."""
    raw = request.match_info["request_identifier"]
    try:
        request_identifier = str(uuid.UUID(raw))
    except ValueError:
        raise not_found("delivery") from None
    pool = request.app[POOL]
    if await deliveries.retry_dead(pool, request[ACCOUNT_ID], request_identifier):
        return _json({"request_identifier": request_identifier, "status": "pending"}, 202)
    status = await deliveries.status_of(pool, request[ACCOUNT_ID], request_identifier)
    if status is None:
        raise not_found("delivery")
    raise ApiError(409, "conflict", f"the delivery is {status}: only a dead one can be retried")
