"""The callback_url of a request that makes links (seed 001's `lt_callbackurl`).

`POST /v1/links` and `POST /v1/messages` take one: the first human tap of each
link the request creates is POSTed there once. It is checked when the request is
made as an endpoint's URL is (form, resolving host, public addresses unless
ALLOW_PRIVATE_ENDPOINTS), and stored as one of the account's endpoints.
"""

from __future__ import annotations

from aiohttp import web

from shortlink import endpoints, validation
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields
from shortlink.api.errors import ValidationFailed
from shortlink.api.keys import API_CONFIG, RESOLVER
from shortlink.exceptions import EndpointError
from shortlink.pool import POOL


async def callback_id(request: web.Request, url: str | None) -> int | None:
    """The destination of a request's callback_url (seed 001), checked like an endpoint's
    URL: 422 when it could not be one."""
    if url is None:
        return None
    config = request.app[API_CONFIG]
    try:
        return await endpoints.callback_endpoint(
            request.app[POOL],
            request[ACCOUNT_ID],
            url,
            allow_private=config.service.allow_private_endpoints,
            resolver=request.app[RESOLVER],
            dns_timeout=config.service.endpoint_dns_timeout,
        )
    except EndpointError as exc:
        raise ValidationFailed([{"field": exc.field, "message": exc.message}]) from None


def callback_url(fields: Fields) -> str | None:
    """The callback_url field, if it has the form the document states."""
    return fields.converted(
        "callback_url",
        fields.text("callback_url", max_length=endpoints.MAX_URL_LENGTH),
        _endpoint_url,
    )


def _endpoint_url(value: str) -> str:
    validation.endpoint_url(value)
    return value
