"""The dashboard's administration pages: the account's API keys, its audit log and its
branded domains.

The keys page needs a session whose key holds keys:admin, the audit page one with
account:admin (shortlink.api.dashboard.sessions: a session carries its key's
scopes). Creating and revoking go through the API's own functions
(shortlink.api.apikeys), so they are checked and audited alike; the audit entry
names the session's key and the browser's address. A new key's secret is in the
answer to the form that made it, once: the page is never cached and the secret
is in no URL. Forms are refused unless the browser marks them same-origin.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shortlink import accounts, audit, domains
from shortlink.api import apikeys
from shortlink.api.auth import client_address
from shortlink.api.dashboard import pages, sessions
from shortlink.api.dashboard.render import page
from shortlink.api.errors import ApiError
from shortlink.exceptions import BadCursor
from shortlink.pool import POOL

PAGE_SIZE = 50
MAX_EXPIRY_DAYS = 3650


async def keys(request: web.Request) -> web.Response:
    """GET /dashboard/keys: the working keys, and the form that makes one."""
    session = await pages.signed_in(request)
    if not session.may("keys:admin"):
        return pages.refused(request, "keys:admin")
    return await _keys_page(request, session)


async def _keys_page(
    request: web.Request,
    session: sessions.Session,
    *,
    made: dict[str, Any] | None = None,
    problems: list[dict[str, str]] | None = None,
    status: int = 200,
) -> web.Response:
    listed = await accounts.list_keys(request.app[POOL], session.account_id)
    return page(
        request,
        "keys.html",
        {
            "session": session,
            "keys": listed,
            "scopes": accounts.SCOPES,
            "made": made,
            "problems": problems or [],
        },
        status=status,
    )


async def _form(request: web.Request, scope: str) -> tuple[sessions.Session, dict[str, Any]]:
    """The session and a form it may send; else a PageAnswer of the sign-in redirect or
    the refusal."""
    if not sessions.same_origin(request):
        raise pages.PageAnswer(pages.cross_site(request))
    session = await pages.signed_in(request)
    if not session.may(scope):
        raise pages.PageAnswer(pages.refused(request, scope))
    try:
        form = await request.post()
    except (ValueError, LookupError, HttpProcessingError):
        raise pages.PageAnswer(
            pages.problem(request, 400, "Bad form", "The form could not be read.")
        ) from None
    return session, {name: [str(value) for value in form.getall(name)] for name in set(form)}


def _expiry(days: str) -> str | None:
    """The expiry a number of days from now stands for, as POST /v1/keys takes it."""
    if not days:
        return None
    if not (days.isascii() and days.isdigit() and len(days) <= 5):
        raise ValueError
    count = int(days)
    if not 1 <= count <= MAX_EXPIRY_DAYS:
        raise ValueError
    return (datetime.now(UTC) + timedelta(days=count)).isoformat()


async def create_key(request: web.Request) -> web.Response:
    """POST /dashboard/keys: make a key; the answer shows its secret, this once."""
    try:
        session, form = await _form(request, "keys:admin")
    except pages.PageAnswer as answer:
        return answer.response
    days = (form.get("expires_in_days") or [""])[0].strip()
    try:
        expires = _expiry(days)
    except ValueError:
        return await _keys_page(
            request,
            session,
            problems=[
                {
                    "field": "expires_in_days",
                    "message": f"must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}",
                }
            ],
            status=422,
        )
    data: dict[str, Any] = {
        "name": (form.get("name") or [None])[0],
        "scopes": form.get("scopes") or None,
        "expires_at": expires,
    }
    try:
        name, scopes, expires_at = apikeys.checked_key_request(data)
        async with request.app[POOL].acquire() as conn:
            made = await apikeys.create_key(
                conn,
                session.account_id,
                session.key_id,
                client_address(request),
                name,
                scopes,
                expires_at,
                session.scopes,
            )
    except ApiError as exc:
        problems = exc.details or [{"field": "(form)", "message": exc.message}]
        return await _keys_page(request, session, problems=problems, status=exc.status)
    return await _keys_page(request, session, made=made.public(), status=201)


async def revoke_key(request: web.Request) -> web.Response:
    """POST /dashboard/keys/{key_id}/revoke: revoke a key at once."""
    try:
        session, _ = await _form(request, "keys:admin")
    except pages.PageAnswer as answer:
        return answer.response
    try:
        key_id = apikeys.key_id_of(request.match_info["key_id"])
    except ApiError:
        key_id = 0
    try:
        async with request.app[POOL].acquire() as conn:
            revoked = key_id and await apikeys.revoke_key(
                conn,
                session.account_id,
                session.key_id,
                client_address(request),
                key_id,
                session.scopes,
            )
    except ApiError as exc:
        return pages.problem(request, exc.status, "Not allowed", exc.message)
    if not revoked:
        return pages.problem(request, 404, "No such key", "This account has no such working key.")
    raise web.HTTPSeeOther("/dashboard/keys")


async def audit_log(request: web.Request) -> web.Response:
    """GET /dashboard/audit?cursor=: the account's administrative changes, newest first."""
    session = await pages.signed_in(request)
    if not session.may("account:admin"):
        return pages.refused(request, "account:admin")
    cursor = request.query.get("cursor") or None
    try:
        entries, next_cursor = await audit.entries(
            request.app[POOL], session.account_id, cursor=cursor, limit=PAGE_SIZE
        )
    except BadCursor:
        return pages.problem(request, 400, "Bad page", "That page link is not one this site made.")
    return page(
        request,
        "audit.html",
        {
            "session": session,
            "entries": entries,
            "next_url": f"/dashboard/audit?{urlencode({'cursor': next_cursor})}"
            if next_cursor
            else None,
            "first_page": cursor is not None,
        },
    )


async def domains_page(request: web.Request) -> web.Response:
    """GET /dashboard/domains: the account's branded domains, whether each is verified, and
    the TXT record that verifies it (account:admin, as the /v1/domains routes)."""
    session = await pages.signed_in(request)
    if not session.may("account:admin"):
        return pages.refused(request, "account:admin")
    rows = await domains.of_account(request.app[POOL], session.account_id)
    return page(
        request,
        "domains.html",
        {"session": session, "domains": [domains.public(row) for row in rows]},
    )
