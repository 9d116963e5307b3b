"""/v1/messages: per-recipient message bodies with their tracked links put in.

`to` is a list of phone numbers, or of objects `{"phone_number", "client_ref",
"vars"}` for per-recipient message ids and template values. Every link of every
recipient is created in one bulk insert; each message comes back with its
links, its length in characters, its encoding and its number of SMS segments
(shortlink.api.render: measured once per plan, the answer sized before any link
is made).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from aiohttp import web

from shortlink import accounts, domains, validation
from shortlink.api import idempotency, render, rewrite
from shortlink.api.account import expired_url
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.callbacks import callback_id, callback_url
from shortlink.api.destinations import rules_field
from shortlink.api.errors import ApiError
from shortlink.api.keys import API_CONFIG
from shortlink.api.links import create_on_domain, link_domain_of
from shortlink.api.present import short_url
from shortlink.db import Connection
from shortlink.exceptions import InvalidInput, NothingToTrack
from shortlink.links import NewLink
from shortlink.pool import POOL
from shortlink.serve import gc_held

MAX_BODY = 10_000  # characters: about 150 concatenated segments
# A template value: the longest target URL; DLT variables are far shorter in practice.
MAX_VALUE = validation.MAX_URL_LENGTH
MAX_VALUES = MAX_BODY // len(rewrite.SLOT)  # no template of MAX_BODY has more slots


async def create(request: web.Request) -> web.Response:
    """POST /v1/messages: rewrite a body per recipient."""
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
            "to",
            "body",
            "mode",
            "https",
            "client_ref",
            "client_identifier",
            "vars",
            "expires_in_days",
            "unsafe",
            "callback_url",
            "expired_url",
            "rules",
            "domain",
        },
    )
    link_rules = rules_field(fields, config.short_domain)
    body = fields.text("body", required=True, max_length=MAX_BODY)
    mode = fields.text("mode", default="track", max_length=20)
    if mode not in rewrite.MODES:
        problems.add("mode", f"must be one of {', '.join(rewrite.MODES)}")
    with_scheme = fields.boolean("https", True)
    shared_ref = fields.text("client_ref", max_length=validation.MAX_TEXT_LENGTH)
    campaign = fields.text("client_identifier", max_length=validation.MAX_TEXT_LENGTH)
    days = fields.integer("expires_in_days", 0, minimum=1, maximum=accounts.MAX_LINK_LIFETIME_DAYS)
    expired = expired_url(fields, config.short_domain)
    unsafe = fields.boolean("unsafe", False)
    requested_domain = fields.converted(
        "domain",
        fields.text("domain", min_length=1, max_length=domains.MAX_RAW_NAME),
        domains.normalise,
    )
    shared_vars = fields.texts("vars", max_items=MAX_VALUES, max_length=MAX_VALUE)
    callback = callback_url(fields)
    to = fields.array("to", max_items=config.max_recipients)
    if to is None and data.get("to") is None:
        problems.add("to", "is required")
    # The recipients as parallel lists: 200,000 of them make no tuple each.
    phones: list[str] = []
    refs: list[str | None] = []
    values: list[list[str] | None] = []
    for index, entry in enumerate(to or []):
        if index % render.SLICE == render.SLICE - 1:
            await asyncio.sleep(0)  # let other requests in
        if isinstance(entry, str):
            entry = {"phone_number": entry}
        if not isinstance(entry, dict):
            problems.add(f"to[{index}]", "must be a phone number or an object")
            continue
        item = Fields(
            entry, problems, f"to[{index}].", allowed={"phone_number", "client_ref", "vars"}
        )
        phone = item.converted(
            "phone_number",
            item.text("phone_number", required=True, max_length=validation.MAX_PHONE_LENGTH),
            validation.phone_number,
        )
        ref = item.text("client_ref", max_length=validation.MAX_TEXT_LENGTH) or shared_ref
        own_vars = item.texts("vars", max_items=MAX_VALUES, max_length=MAX_VALUE)
        if phone is not None:
            phones.append(phone)
            refs.append(ref)
            values.append(own_vars)
    if to is not None and not to:
        problems.add("to", "must name at least one recipient")
    problems.check()
    if body is None or mode is None:  # pragma: no cover - required fields, checked above
        raise ApiError(422, "validation_failed", "body and mode are required")

    plans, distinct, link_count = await _plans(body, mode, shared_vars, values, problems)
    render.check_link_count(link_count, config, "to")
    # Every target is checked once, even if many recipients share it.
    checked: dict[str, str] = {}
    for index, plan in distinct:
        for target in plan.targets:
            if target not in checked:
                try:
                    checked[target] = validation.target_url(target, config.short_domain)
                except InvalidInput as exc:
                    where = "body" if mode != "template" else f"to[{index}].vars"
                    problems.add(where, f"the URL {target[:100]!r} {exc}")
                    checked[target] = ""
    problems.check()
    domain = await link_domain_of(request, account_id, requested_domain)
    forms = render.Forms(
        short_url(config, "", with_scheme=with_scheme, domain=domain), config.service.token_length
    )
    render.check_size(await render.messages_size(forms, plans, phones, refs), config, "to")
    destination = await callback_id(request, callback)
    if not days:  # the account's lifetime
        days = await accounts.link_lifetime_days(request.app[POOL], account_id)
    lifetime = timedelta(days=days)
    specs = []
    async for part in render.slices(len(plans)):
        specs += [
            NewLink(
                checked[target], phone, ref, campaign, None, unsafe, lifetime, expired, link_rules
            )
            for plan, phone, ref in zip(plans[part], phones[part], refs[part], strict=True)
            for target in plan.targets
        ]

    async def action(conn: Connection) -> tuple[int, bytes]:
        created = await create_on_domain(
            conn, account_id, specs, config.service.token_length, destination, domain
        )
        return 201, await render.messages_answer(forms, plans, phones, refs, created)

    return await idempotency.respond(request, account_id, raw, action)


async def _plans(
    body: str,
    mode: str,
    shared_vars: list[str] | None,
    values: list[list[str] | None],
    problems: Problems,
) -> tuple[list[rewrite.Plan], list[tuple[int, rewrite.Plan]], int]:
    """One plan per recipient (one object for all who share the body and values); each
    different plan with the index of its first recipient; the number of links in all."""
    try:
        if mode != "template":
            shared = rewrite.plan(body, mode)
            return [shared] * len(values), [(0, shared)], len(values) * len(shared.targets)
        cache: dict[tuple[str, ...], rewrite.Plan] = {}
        plans = []
        distinct = []
        link_count = 0
        for index, own in enumerate(values):
            if index % render.SLICE == render.SLICE - 1:
                await asyncio.sleep(0)
            given = own if own is not None else shared_vars
            if given is None:
                problems.add(
                    f"to[{index}].vars", "template mode needs vars (shared or per recipient)"
                )
                continue
            key = tuple(given)
            plan = cache.get(key)
            if plan is None:
                plan = cache[key] = rewrite.plan_template(body, given)
                distinct.append((index, plan))
            plans.append(plan)
            link_count += len(plan.targets)
        problems.check()
        return plans, distinct, link_count
    except NothingToTrack as exc:
        raise ApiError(
            422,
            "nothing_to_track",
            f"body: {exc} (mode {mode})",
            [{"field": "body", "message": f"{exc} (mode {mode})"}],
        ) from None
    except ValueError as exc:
        raise ApiError(
            422, "validation_failed", f"vars: {exc}", [{"field": "vars", "message": str(exc)}]
        ) from None
