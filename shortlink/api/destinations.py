"""Smart destinations at the API's edge: the `rules` and `variants` fields, and
PATCH /v1/campaigns/{client_identifier} (retargeting a sent campaign).

The rule language and how a variant is chosen are shortlink.rules'; this module
reads the fields into it, reporting problems as 422 like every other field.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from shortlink import audit, links, rules, validation
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import not_found
from shortlink.api.keys import API_CONFIG
from shortlink.pool import POOL

_CAMPAIGN_FIELDS = {"url", "rules"}


def rules_field(fields: Fields, short_domain: str) -> str | None:
    """The `rules` field as stored (shortlink.rules.canonical); None when not given or empty."""
    if not fields.has("rules"):
        return None
    try:
        checked = rules.check_rules(
            fields.data["rules"], lambda url: validation.target_url(url, short_domain)
        )
    except ValueError as exc:
        fields.problems.add(fields.name("rules") + _where(exc), _what(exc))
        return None
    return rules.canonical(checked)


def variants_field(fields: Fields, short_domain: str) -> list[tuple[str, int]] | None:
    """The `variants` field, (url, weight) each; None when not given."""
    if not fields.has("variants"):
        return None
    try:
        return rules.check_variants(
            fields.data["variants"], lambda url: validation.target_url(url, short_domain)
        )
    except ValueError as exc:
        fields.problems.add(fields.name("variants") + _where(exc), _what(exc))
        return None


def _where(exc: ValueError) -> str:
    """The position a shortlink.rules message starts with (`[2].url: ...`), if any."""
    text = str(exc)
    return text.split(": ", 1)[0] if text.startswith("[") else ""


def _what(exc: ValueError) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("[") and ": " in text else text


async def retarget(request: web.Request) -> web.Response:
    """PATCH /v1/campaigns/{client_identifier}: a new url and/or rules for every link of
    the campaign, in one transaction; answers how many links changed."""
    config = request.app[API_CONFIG]
    account_id = request[ACCOUNT_ID]
    campaign = request.match_info["client_identifier"]
    data = await json_object(request)
    problems = Problems()
    if not 1 <= len(campaign) <= validation.MAX_TEXT_LENGTH or "\x00" in campaign:
        raise not_found("campaign")
    fields = Fields(data, problems, allowed=_CAMPAIGN_FIELDS)
    url = fields.converted(
        "url",
        fields.text("url", max_length=validation.MAX_URL_LENGTH),
        lambda value: validation.target_url(value, config.short_domain),
    )
    new_rules = rules_field(fields, config.short_domain)
    if not fields.has("url") and not fields.has("rules"):
        problems.add("(body)", "give url, rules or both")
    problems.check()
    change: dict[str, Any] = {}
    if url is not None:
        change["target_url"] = url
    else:
        change["target_url"] = None
    if fields.has("rules"):
        change["rules"] = new_rules
    async with request.app[POOL].acquire() as conn, conn.transaction():
        count = await links.retarget(conn, account_id, campaign, **change)
        if count == 0:
            raise not_found("campaign")
        summary: dict[str, Any] = {"client_identifier": campaign, "links": count}
        if url is not None:
            summary["url"] = url
        if fields.has("rules"):
            summary["rules"] = orjson.loads(new_rules) if new_rules else []
        await audit.record(
            conn,
            account_id,
            request.get(KEY_ID),
            client_address(request),
            "campaign.retargeted",
            summary,
        )
    return web.json_response({"client_identifier": campaign, "links": count})
