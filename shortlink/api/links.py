"""/v1/links: one tracked link per recipient, in bulk; status; changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from shortlink import accounts, conversions, domains, links, tokens, validation
from shortlink.api import idempotency, render
from shortlink.api.account import expired_url
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.callbacks import callback_id, callback_url
from shortlink.api.destinations import rules_field, variants_field
from shortlink.api.errors import ApiError, not_found
from shortlink.api.keys import API_CONFIG
from shortlink.api.present import short_url, statuses
from shortlink.db import Connection
from shortlink.exceptions import DomainGone, InvalidInput
from shortlink.links import NewLink
from shortlink.pool import POOL
from shortlink.rules import choose_variant
from shortlink.serve import gc_held


def _token(request: web.Request) -> str:
    token = request.match_info["token"]
    if not tokens.is_token(token):
        raise not_found("link")
    return token


async def create(request: web.Request) -> web.Response:
    """POST /v1/links: one link per recipient, in request order."""
    raw = await request.read()  # first: a client sending slowly must not hold the collector
    with gc_held():  # a bulk request: see shortlink.serve.gc_held
        return await _create(request, raw)


async def _create(request: web.Request, raw: bytes) -> web.Response:
    config = request.app[API_CONFIG]
    account_id = request[ACCOUNT_ID]
    data = await json_object(request)
    problems = Problems()
    fields = Fields(
        data,
        problems,
        allowed={
            "url",
            "recipients",
            "client_identifier",
            "expires_in_days",
            "unsafe",
            "https",
            "callback_url",
            "expired_url",
            "rules",
            "variants",
            "domain",
        },
    )
    variants = variants_field(fields, config.short_domain)
    if fields.has("variants") and fields.has("url"):
        problems.add("variants", "give url or variants, not both")
    url = fields.converted(
        "url",
        fields.text(
            "url", required=not fields.has("variants"), max_length=validation.MAX_URL_LENGTH
        ),
        lambda value: validation.target_url(value, config.short_domain),
    )
    link_rules = rules_field(fields, config.short_domain)
    campaign = fields.text("client_identifier", max_length=validation.MAX_TEXT_LENGTH)
    days = fields.integer("expires_in_days", 0, minimum=1, maximum=accounts.MAX_LINK_LIFETIME_DAYS)
    expired = expired_url(fields, config.short_domain)
    unsafe = fields.boolean("unsafe", False)
    requested_domain = fields.converted(
        "domain",
        fields.text("domain", min_length=1, max_length=domains.MAX_RAW_NAME),
        domains.normalise,
    )
    with_scheme = fields.boolean("https", True)
    callback = callback_url(fields)
    recipients = fields.array("recipients", max_items=config.max_recipients)
    phones: list[str | None] = []
    refs: list[str | None] = []
    for index, recipient in enumerate(recipients or []):
        if index % render.SLICE == render.SLICE - 1:
            await asyncio.sleep(0)  # let other requests in
        if not isinstance(recipient, dict):
            problems.add(f"recipients[{index}]", "must be an object")
            continue
        item = Fields(
            recipient, problems, f"recipients[{index}].", allowed={"phone_number", "client_ref"}
        )
        phone = item.converted(
            "phone_number",
            item.text("phone_number", max_length=validation.MAX_PHONE_LENGTH),
            validation.phone_number,
        )
        phones.append(phone)
        refs.append(item.text("client_ref", max_length=validation.MAX_TEXT_LENGTH))
    problems.check()
    if not phones:
        phones, refs = [None], [None]
    render.check_link_count(len(phones), config, "recipients")
    domain = await link_domain_of(request, account_id, requested_domain)
    prefix = short_url(config, "", with_scheme=with_scheme, domain=domain)
    size = await render.links_size(prefix, config.service.token_length, phones, refs)
    render.check_size(size, config, "recipients")
    destination = await callback_id(request, callback)
    if not days:  # the account's lifetime
        days = await accounts.link_lifetime_days(request.app[POOL], account_id)
    lifetime = timedelta(days=days)
    specs = []
    weights = [weight for _, weight in variants or ()]
    async for part in render.slices(len(phones)):
        if variants:
            chosen = [choose_variant(weights) for _ in phones[part]]
            specs += [
                NewLink(
                    variants[index][0],
                    phone,
                    ref,
                    campaign,
                    None,
                    unsafe,
                    lifetime,
                    expired,
                    link_rules,
                    index,
                )
                for phone, ref, index in zip(phones[part], refs[part], chosen, strict=True)
            ]
        else:
            specs += [
                NewLink(
                    url or "", phone, ref, campaign, None, unsafe, lifetime, expired, link_rules
                )
                for phone, ref in zip(phones[part], refs[part], strict=True)
            ]

    async def action(conn: Connection) -> tuple[int, bytes]:
        created = await create_on_domain(
            conn, account_id, specs, config.service.token_length, destination, domain
        )
        if variants and campaign:
            await links.keep_variants(conn, account_id, campaign, variants)
        return 201, await render.links_answer(prefix, phones, refs, created)

    return await idempotency.respond(request, account_id, raw, action)


async def get(request: web.Request) -> web.Response:
    """GET /v1/links/{token}: status (accessed, when, clicks) and details."""
    pool = request.app[POOL]
    row = await links.find(pool, request[ACCOUNT_ID], _token(request))
    if row is None:
        raise not_found("link")
    [shown] = await statuses(pool, request.app[API_CONFIG], [row])
    return web.json_response(shown, dumps=_dumps)


async def by_client_ref(request: web.Request) -> web.Response:
    """GET /v1/links?client_ref=...: the links of one message."""
    problems = Problems()
    query = Fields(request.query, problems)
    client_ref = query.text(
        "client_ref", required=True, min_length=1, max_length=validation.MAX_TEXT_LENGTH
    )
    problems.check()
    if client_ref is None:  # pragma: no cover - required, checked above
        raise ApiError(422, "validation_failed", "client_ref: is required")
    pool = request.app[POOL]
    rows = await links.find_by_client_ref(pool, request[ACCOUNT_ID], client_ref)
    shown = await statuses(pool, request.app[API_CONFIG], rows)
    return web.json_response({"links": shown}, dumps=_dumps)


async def patch(request: web.Request) -> web.Response:
    """PATCH /v1/links/{token}: change target, expiry or unsafe flag."""
    config = request.app[API_CONFIG]
    token = _token(request)
    data = await json_object(request)
    problems = Problems()
    fields = Fields(
        data, problems, allowed={"url", "expires_in_days", "unsafe", "expired_url", "rules"}
    )
    url = fields.converted(
        "url",
        fields.text("url", max_length=validation.MAX_URL_LENGTH),
        lambda value: validation.target_url(value, config.short_domain),
    )
    days = (
        fields.integer("expires_in_days", 0, minimum=0, maximum=accounts.MAX_LINK_LIFETIME_DAYS)
        if fields.has("expires_in_days")
        else None
    )
    unsafe = fields.boolean("unsafe", False) if fields.has("unsafe") else None
    expired = expired_url(fields, config.short_domain)
    link_rules = rules_field(fields, config.short_domain)
    if not data:
        problems.add(
            "(body)", "give at least one of url, expires_in_days, unsafe, expired_url, rules"
        )
    problems.check()
    # 0 days expires the link now: from then on it answers 410 (link expired).
    expires_at = datetime.now(UTC) + timedelta(days=days) if days is not None else None
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        changed = await links.update(
            conn,
            request[ACCOUNT_ID],
            token,
            target_url=url,
            expires_at=expires_at,
            unsafe=unsafe,
            expired_url=expired if "expired_url" in data else links.UNCHANGED,
            rules=link_rules if fields.has("rules") else links.UNCHANGED,
        )
        if not changed:
            raise not_found("link")
        row = await links.find(conn, request[ACCOUNT_ID], token)
        if row is None:  # pragma: no cover - updated a moment ago in this account
            raise not_found("link")
        [shown] = await statuses(conn, config, [row])
    return web.json_response(shown, dumps=_dumps)


async def delete(request: web.Request) -> web.Response:
    """DELETE /v1/links/{token}: disable the link (410 from now on)."""
    token = _token(request)
    async with request.app[POOL].acquire() as conn:
        if not await links.disable(conn, request[ACCOUNT_ID], token):
            raise not_found("link")
    return web.Response(status=204)


async def link_domain_of(
    request: web.Request, account_id: int, requested: str | None
) -> str | None:
    """The domain of a request's new links (shortlink.domains.link_domain); 422 when the
    request names one the account cannot use."""
    try:
        return await domains.link_domain(request.app[POOL], account_id, requested)
    except InvalidInput as exc:
        raise _domain_refused(str(exc)) from None


async def create_on_domain(
    conn: Connection,
    account_id: int,
    specs: list[NewLink],
    token_length: int,
    callback: int | None,
    domain: str | None,
) -> list[links.CreatedLink]:
    """links.create_links for a request; 422 when its domain was removed since
    link_domain_of looked (nothing is made)."""
    try:
        return await links.create_links(
            conn, account_id, specs, token_length=token_length, callback_id=callback, domain=domain
        )
    except DomainGone as exc:
        raise _domain_refused(str(exc)) from None


def _domain_refused(message: str) -> ApiError:
    return ApiError(
        422, "validation_failed", f"domain: {message}", [{"field": "domain", "message": message}]
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=conversions.json_default).decode()
