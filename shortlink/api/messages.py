"""/v1/messages: per-recipient message bodies with their tracked links put in.

`to` is a list of phone numbers, or of objects `{"phone_number", "client_ref",
"vars"}` for per-recipient message ids and template values. Every link of every
recipient is created in one bulk insert; each message comes back with its
links, its length in characters, its encoding and its number of SMS segments.
"""

from __future__ import annotations

from datetime import timedelta

import orjson
from aiohttp import web

from shortlink import links, validation
from shortlink.api import idempotency, rewrite, sms
from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError
from shortlink.api.links import (
    API_CONFIG,
    MAX_TEXT,
    callback_id,
    callback_url,
    check_link_count,
    short_url,
)
from shortlink.db import Connection
from shortlink.links import NewLink

MAX_BODY = 10_000  # characters: about 150 concatenated segments


async def create(request: web.Request) -> web.Response:
    """POST /v1/messages: rewrite a body per recipient."""
    config = request.app[API_CONFIG]
    account_id = request[ACCOUNT_ID]
    raw = await request.read()
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
        },
    )
    body = fields.text("body", required=True, max_length=MAX_BODY)
    mode = fields.text("mode", default="track", max_length=20)
    if mode not in rewrite.MODES:
        problems.add("mode", f"must be one of {', '.join(rewrite.MODES)}")
    with_scheme = fields.boolean("https", True)
    shared_ref = fields.text("client_ref", max_length=MAX_TEXT)
    campaign = fields.text("client_identifier", max_length=MAX_TEXT)
    days = fields.integer("expires_in_days", 90, minimum=1, maximum=3650)
    unsafe = fields.boolean("unsafe", False)
    shared_vars = fields.texts("vars")
    callback = callback_url(fields)
    to = fields.array("to", max_items=config.max_recipients)
    if to is None and data.get("to") is None:
        problems.add("to", "is required")
    recipients: list[tuple[str, str | None, list[str] | None]] = []
    for index, entry in enumerate(to or []):
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
        ref = item.text("client_ref", max_length=MAX_TEXT) or shared_ref
        own_vars = item.texts("vars")
        if phone is not None:
            recipients.append((phone, ref, own_vars))
    if to is not None and not to:
        problems.add("to", "must name at least one recipient")
    problems.check()
    if body is None or mode is None:  # pragma: no cover - required fields, checked above
        raise ApiError(422, "validation_failed", "body and mode are required")

    plans = _plans(body, mode, shared_vars, recipients, problems)
    check_link_count(sum(len(plan.targets) for plan in plans), config, "to")
    # Every target is checked once, even if many recipients share it.
    checked: dict[str, str] = {}
    for index, plan in enumerate(plans):
        for target in plan.targets:
            if target not in checked:
                try:
                    checked[target] = validation.target_url(target, config.short_domain)
                except validation.InvalidInput as exc:
                    where = "body" if mode != "template" else f"to[{index}].vars"
                    problems.add(where, f"the URL {target[:100]!r} {exc}")
                    checked[target] = ""
    problems.check()
    destination = await callback_id(request, callback)

    specs = [
        NewLink(checked[target], phone, ref, campaign, None, unsafe, timedelta(days=days))
        for plan, (phone, ref, _) in zip(plans, recipients, strict=True)
        for target in plan.targets
    ]

    async def action(conn: Connection) -> tuple[int, bytes]:
        created = iter(
            await links.create_links(
                conn,
                account_id,
                specs,
                token_length=config.service.token_length,
                callback_id=destination,
            )
        )
        messages = []
        for plan, (phone, ref, _) in zip(plans, recipients, strict=True):
            made = [next(created) for _ in plan.targets]
            urls = [short_url(config, link.token, with_scheme=with_scheme) for link in made]
            text = plan.render(urls)
            measured = sms.measure(text)
            messages.append(
                {
                    "to": phone,
                    "client_ref": ref,
                    "body": text,
                    "links": [
                        {
                            "tracking_url_id": link.id,
                            "token": link.token,
                            "short_url": url,
                            "target_url": target,
                        }
                        for link, url, target in zip(made, urls, plan.targets, strict=True)
                    ],
                    "length": measured.length,
                    "encoding": measured.encoding,
                    "segments": measured.segments,
                }
            )
        return 201, orjson.dumps({"messages": messages})

    return await idempotency.respond(request, account_id, raw, action)


def _plans(
    body: str,
    mode: str,
    shared_vars: list[str] | None,
    recipients: list[tuple[str, str | None, list[str] | None]],
    problems: Problems,
) -> list[rewrite.Plan]:
    """One plan per recipient (shared when the body and values are shared)."""
    try:
        if mode != "template":
            shared = rewrite.plan(body, mode)
            return [shared] * len(recipients)
        cache: dict[tuple[str, ...], rewrite.Plan] = {}
        plans = []
        for index, (_, _, own_vars) in enumerate(recipients):
            values = own_vars if own_vars is not None else shared_vars
            if values is None:
                problems.add(
                    f"to[{index}].vars", "template mode needs vars (shared or per recipient)"
                )
                continue
            key = tuple(values)
            if key not in cache:
                cache[key] = rewrite.plan_template(body, values)
            plans.append(cache[key])
        problems.check()
        return plans
    except rewrite.NothingToTrack as exc:
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
