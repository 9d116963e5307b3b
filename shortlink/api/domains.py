"""/v1/domains: an account's branded short domains (shortlink.domains).

Every change is audited (shortlink.audit) in its own transaction and reaches the
redirect workers through the change notification it makes.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from shortlink import audit, domains
from shortlink.api.account import expired_url
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError, not_found
from shortlink.api.keys import API_CONFIG
from shortlink.db import Connection
from shortlink.exceptions import DnsLookupFailed, DomainTaken, InvalidInput
from shortlink.pool import POOL

_PATCH_FIELDS = {"default", "not_found_url", "expired_url", *domains.DOCUMENTS}


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


def _name(request: web.Request) -> str:
    """The domain the path names, normalised; 404 for what cannot be a domain."""
    try:
        return domains.normalise(request.match_info["domain"])
    except InvalidInput:
        raise not_found("domain") from None


async def _audit(request: web.Request, conn: Connection, action: str, summary: Any) -> None:
    await audit.record(
        conn, request[ACCOUNT_ID], request.get(KEY_ID), client_address(request), action, summary
    )


async def create(request: web.Request) -> web.Response:
    """POST /v1/domains: add a domain, unverified, with the TXT record that verifies it."""
    data = await json_object(request)
    problems = Problems()
    fields = Fields(data, problems, allowed={"domain"})
    short_domain = request.app[API_CONFIG].short_domain
    name = fields.converted(
        "domain",
        fields.text("domain", required=True, min_length=1, max_length=domains.MAX_RAW_NAME),
        lambda raw: domains.normalise(raw, short_domain),
    )
    problems.check()
    if name is None:  # pragma: no cover - required, checked above
        raise ApiError(422, "validation_failed", "domain: is required")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        try:
            row = await domains.add(conn, request[ACCOUNT_ID], name)
        except DomainTaken as exc:
            raise ApiError(409, "domain_taken", str(exc)) from None
        except InvalidInput as exc:
            raise ApiError(409, "too_many_domains", str(exc)) from None
        await _audit(request, conn, "domain.added", {"domain": name, "verified": False})
    return _json(domains.public(row), 201)


async def list_domains(request: web.Request) -> web.Response:
    """GET /v1/domains: the account's domains."""
    rows = await domains.of_account(request.app[POOL], request[ACCOUNT_ID])
    return _json({"domains": [domains.public(row) for row in rows]})


async def get(request: web.Request) -> web.Response:
    """GET /v1/domains/{domain}."""
    row = await domains.get(request.app[POOL], request[ACCOUNT_ID], _name(request))
    if row is None:
        raise not_found("domain")
    return _json(domains.public(row))


async def patch(request: web.Request) -> web.Response:
    """PATCH /v1/domains/{domain}: default, not_found_url, expired_url, app-link documents
    (null removes a URL or a document)."""
    name = _name(request)
    data = await json_object(request)
    problems = Problems()
    fields = Fields(data, problems, allowed=_PATCH_FIELDS)
    config = request.app[API_CONFIG]
    changes: dict[str, Any] = {}
    if "default" in data:
        if not isinstance(data["default"], bool):
            problems.add("default", "must be true or false")
        else:
            changes["is_default"] = data["default"]
    if "not_found_url" in data:
        # The same checks as expired_url: an http(s) URL, not on SHORT_DOMAIN.
        renamed = Problems()
        changes["not_found_url"] = expired_url(
            Fields({"expired_url": data["not_found_url"]}, renamed), config.short_domain
        )
        for problem in renamed.details:
            problems.add("not_found_url", problem["message"])
    if "expired_url" in data:
        changes["expired_url"] = expired_url(fields, config.short_domain)
    for field in ("not_found_url", "expired_url"):
        if changes.get(field) and domains.points_at(changes[field], name):
            # A tap there would come back to this domain: an unknown token, a loop.
            problems.add(field, "must not point at this domain itself")
    for field in domains.DOCUMENTS:
        if field in data:
            if data[field] is None:
                changes[field] = None
            else:
                try:
                    changes[field] = domains.document(data[field])
                except InvalidInput as exc:
                    problems.add(field, str(exc))
    if not data:
        problems.add("(body)", f"give at least one of {', '.join(sorted(_PATCH_FIELDS))}")
    problems.check()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        try:
            row = await domains.update(conn, request[ACCOUNT_ID], name, **changes)
        except InvalidInput as exc:  # a state, not a bad value: verify it first
            raise ApiError(409, "domain_not_verified", f"default: {exc}") from None
        if row is None:
            raise not_found("domain")
        summary = {"domain": name, **{k: v for k, v in data.items() if k in _PATCH_FIELDS}}
        if any(field in summary for field in domains.DOCUMENTS):  # the size, not the document
            for field in domains.DOCUMENTS:
                if field in summary:
                    summary[field] = None if changes[field] is None else len(changes[field])
        await _audit(request, conn, "domain.changed", summary)
    return _json(domains.public(row))


async def delete(request: web.Request) -> web.Response:
    """DELETE /v1/domains/{domain}: its links stop answering."""
    name = _name(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if not await domains.remove(conn, request[ACCOUNT_ID], name):
            raise not_found("domain")
        await _audit(request, conn, "domain.removed", {"domain": name})
    return web.Response(status=204)


async def verify(request: web.Request) -> web.Response:
    """POST /v1/domains/{domain}/verify: look the TXT record up; 200 verified, 409 with
    what was found."""
    name = _name(request)
    pool = request.app[POOL]
    account_id = request[ACCOUNT_ID]
    row = await domains.get(pool, account_id, name)
    if row is None:
        raise not_found("domain")
    if row["verified"]:
        return _json(domains.public(row))
    try:
        await domains.refuse_if_taken(pool, account_id, name)  # before asking the DNS
    except DomainTaken as exc:
        raise ApiError(409, "domain_taken", str(exc)) from None
    config = request.app[API_CONFIG]
    record = domains.CHALLENGE_PREFIX + name
    try:
        found = await domains.txt_values(record, config.dns_resolvers, lifetime=config.dns_timeout)
    except DnsLookupFailed as exc:
        raise ApiError(503, "dns_unavailable", f"the TXT lookup failed: {exc}") from None
    if row["verification"] not in found:
        shown = [
            value[: domains.MAX_TXT_LENGTH] for value in sorted(found)[: domains.MAX_TXT_SHOWN]
        ]
        body = {
            "error": {
                "code": "verification_failed",
                "message": f"the TXT record {record} does not hold the verification value",
            },
            "domain": name,
            "verified": False,
            "found": shown,
            "expected": {"type": "dns-txt", "name": record, "value": row["verification"]},
        }
        return _json(body, 409)
    async with pool.acquire() as conn, conn.transaction():
        try:
            verified = await domains.mark_verified(conn, account_id, name)
        except DomainTaken as exc:
            raise ApiError(409, "domain_taken", str(exc)) from None
        if verified is None:  # removed meanwhile
            raise not_found("domain")
        await _audit(request, conn, "domain.verified", {"domain": name})
    return _json(domains.public(verified))
