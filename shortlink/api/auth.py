"""Bearer API keys: every /v1 route but the OpenAPI document and /v1/docs needs one
(the CSV routes take the dashboard's session cookie instead, signed in before this).

A key is looked up by its SHA-256 (shortlink.accounts); a missing, unknown,
revoked or disabled key is a 401. The account found is the only one the
request can see: other accounts' ids answer 404.
"""

from __future__ import annotations

from aiohttp import web

from shortlink.accounts import authenticate
from shortlink.api.errors import ApiError, Handler
from shortlink.pool import POOL

ACCOUNT_ID = web.RequestKey("account_id", int)
PUBLIC = frozenset({"/v1/openapi.json", "/v1/docs"})


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/") or request.path in PUBLIC:
        return await handler(request)
    if ACCOUNT_ID in request:  # signed in by the dashboard's session cookie (CSV downloads)
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("send Authorization: Bearer <api key>")
    account_id = await authenticate(request.app[POOL], key.strip())
    if account_id is None:
        raise _unauthorized("the API key is not valid")
    request[ACCOUNT_ID] = account_id
    return await handler(request)
