"""/v1/account: the account's storage settings (how long links live, how long clicks
are kept, how much of a client address is kept, where expired links go)."""

from __future__ import annotations

import orjson
from aiohttp import web

from shortlink import accounts, audit, validation
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.keys import API_CONFIG
from shortlink.exceptions import InvalidInput
from shortlink.pool import POOL

_FIELDS = {"link_lifetime_days", "click_retention_days", "ip_storage", "expired_url"}


def _json(settings: accounts.Settings) -> web.Response:
    return web.Response(body=orjson.dumps(settings.public()), content_type="application/json")


def expired_url(fields: Fields, short_domain: str) -> str | None:
    """A request's `expired_url`: an http(s) URL not on the short domain, or None."""

    def checked(value: str) -> str:
        url = validation.target_url(value, short_domain)
        if len(url) > validation.MAX_URL_LENGTH:  # percent-encoding made it longer
            raise InvalidInput(
                f"must be at most {validation.MAX_URL_LENGTH} characters once normalised"
            )
        return url

    return fields.converted(
        "expired_url",
        fields.text("expired_url", min_length=1, max_length=validation.MAX_URL_LENGTH),
        checked,
    )


async def get(request: web.Request) -> web.Response:
    """GET /v1/account: the account's settings."""
    return _json(await accounts.get_settings(request.app[POOL], request[ACCOUNT_ID]))


async def patch(request: web.Request) -> web.Response:
    """PATCH /v1/account: change some settings; `"expired_url": null` removes it."""
    data = await json_object(request)
    problems = Problems()
    fields = Fields(data, problems, allowed=_FIELDS)
    lifetime = fields.integer(
        "link_lifetime_days", 0, minimum=1, maximum=accounts.MAX_LINK_LIFETIME_DAYS
    )
    retention = fields.integer(
        "click_retention_days", 0, minimum=1, maximum=accounts.MAX_CLICK_RETENTION_DAYS
    )
    mode = fields.text("ip_storage", max_length=20)
    if mode is not None and mode not in accounts.IP_STORAGE_MODES:
        problems.add("ip_storage", f"must be one of {', '.join(accounts.IP_STORAGE_MODES)}")
    url = expired_url(fields, request.app[API_CONFIG].short_domain)
    if not data:
        problems.add("(body)", f"give at least one of {', '.join(sorted(_FIELDS))}")
    problems.check()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        settings = await accounts.update_settings(
            conn,
            request[ACCOUNT_ID],
            link_lifetime_days=lifetime or None,
            click_retention_days=retention or None,
            ip_storage=mode,
            expired_url=url if "expired_url" in data else accounts.UNSET,
        )
        await audit.record(
            conn,
            request[ACCOUNT_ID],
            request.get(KEY_ID),
            client_address(request),
            "account.settings_changed",
            settings.public(),
        )
    return _json(settings)
