"""Dashboard sessions: a signed, expiring cookie, and signed links that open one.

Both are itsdangerous signatures made with DASHBOARD_SECRET under different salts
(a cookie cannot be used as a link, nor a link as a cookie), and both carry their
expiry: a session lasts 12 hours, a link as long as `shortlink dashboard-link
--hours` says, and the session a link opens ends when the link would have.

Every session comes from an API key and names it: the key signed in with, or for
a link the account's key when the link was made (a link names it too). The
session ends as soon as that key is revoked (`shortlink account rotate-key`
revokes them all), expires, or the account is disabled, checked on every request
with one indexed lookup (shortlink.api.auth.check_key: on the primary, or for the
campaign pages on the replica when the primary does not answer); so does the link.
That lookup also reads the key's scopes, which are the session's: a session signed
in with a key may do in the dashboard what the key may do in the API (read
statistics with stats:read, manage keys with keys:admin, read the audit log with
account:admin), and no more. A session from a dashboard link only reads
statistics, whatever its key holds, and one for a campaign sees that campaign and
nothing else. (Links and sessions made before links named their key name none, and
are refused.)

A cookie that carries no valid session (forged, tampered with, expired, revoked,
or bytes that are not even ASCII) is treated as no cookie and cleared in the answer.
The cookie is HttpOnly, SameSite=Strict and, when the site is https, Secure.
Sign-in and sign-out forms are protected against cross-site requests by
SameSite=Strict and by refusing a POST that the browser does not mark as
same-origin (Sec-Fetch-Site, else Origin; see `same_origin`); there is no
separate CSRF token.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from itsdangerous import BadData, URLSafeSerializer

from shortlink.accounts import KEY_WORKS, hash_api_key, is_key_shaped, scopes_of
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, SCOPES, check_key
from shortlink.api.config import DashboardConfig
from shortlink.api.errors import Handler
from shortlink.api.keys import API_CONFIG
from shortlink.db import Executor

COOKIE = "shortlink_session"
SESSION_SECONDS = 12 * 3600
MAX_LINK_HOURS = 24 * 90
# The campaign a link-made session is limited to (absent: the whole account).
CAMPAIGN_SCOPE = web.RequestKey("dashboard_campaign_scope", str)


@dataclass(frozen=True)
class Session:
    account_id: int
    key_id: int  # the API key it came from: signed in with, or its link was made under
    campaign: str | None  # the only campaign a link-made session may see
    expires_at: int  # seconds since the epoch
    from_link: bool = False  # opened by a dashboard link: it only reads statistics
    # The key's scopes, read from the database on every request (never from the cookie).
    scopes: frozenset[str] = frozenset()

    def sees(self, campaign: str) -> bool:
        return self.campaign is None or self.campaign == campaign

    def may(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class Grant:
    """What a dashboard link signs in: an account, as long as the key it was made under
    holds, perhaps one campaign, until when."""

    account_id: int
    key_id: int
    campaign: str | None
    expires_at: int


class Signer:
    """Makes and checks session cookies and dashboard links."""

    def __init__(self, secret: str) -> None:
        self._session = URLSafeSerializer(secret, salt="shortlink.dashboard.session")
        self._link = URLSafeSerializer(secret, salt="shortlink.dashboard.link")

    def cookie(self, session: Session) -> str:
        return str(
            self._session.dumps(
                [
                    session.account_id,
                    session.key_id,
                    session.campaign,
                    session.expires_at,
                    session.from_link,
                ]
            )
        )

    def session(self, value: str, *, now: float) -> Session | None:
        """The session a cookie carries, or None if it is forged, tampered with or expired."""
        fields = self._load(self._session, value, 5)
        if fields is None:
            return None
        account_id, key_id, campaign, expires_at, from_link = fields
        if not (
            _is_int(account_id)
            and _is_int(key_id)
            and (campaign is None or isinstance(campaign, str))
            and _is_int(expires_at)
            and expires_at > now
            and isinstance(from_link, bool)
        ):
            return None
        return Session(account_id, key_id, campaign, expires_at, from_link)

    def link_token(self, grant: Grant) -> str:
        return str(
            self._link.dumps([grant.account_id, grant.key_id, grant.campaign, grant.expires_at])
        )

    def grant(self, token: str, *, now: float) -> Grant | None:
        """What a dashboard link grants, or None if it is forged, tampered with or expired."""
        fields = self._load(self._link, token, 4)
        if fields is None:
            return None
        account_id, key_id, campaign, expires_at = fields
        if not (
            _is_int(account_id)
            and _is_int(key_id)
            and (campaign is None or isinstance(campaign, str))
            and _is_int(expires_at)
            and expires_at > now
        ):
            return None
        return Grant(account_id, key_id, campaign, expires_at)

    @staticmethod
    def _load(serializer: URLSafeSerializer, value: str, size: int) -> list[Any] | None:
        # A cookie of an older release (four fields, no from_link) is no session: it is
        # cleared and its browser signs in again.
        # What we sign is ASCII; a header can carry anything (bytes that were not
        # UTF-8 arrive as lone surrogates, which itsdangerous cannot even encode).
        if not value.isascii():
            return None
        try:
            fields: object = serializer.loads(value)
        except BadData:
            return None
        if not isinstance(fields, list) or len(fields) != size:
            return None
        return fields


SIGNER = web.AppKey("dashboard_signer", Signer)
SESSION = web.RequestKey("dashboard_session", Session)
# The request came with a session cookie that is no (longer a) session: the answer clears it.
STALE_COOKIE = web.RequestKey("dashboard_stale_cookie", bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dashboard_link(config: DashboardConfig, grant: Grant) -> str:
    """The URL that signs `grant` in (for `shortlink dashboard-link`)."""
    if config.secret is None:
        raise ValueError("DASHBOARD_SECRET is needed to sign dashboard links")
    return f"{config.public_url}/dashboard/link/{Signer(config.secret).link_token(grant)}"


async def sign_in_with_key(conn: Executor, key: str, *, now: float) -> Session | None:
    """A new session for the account behind a valid API key, or None."""
    if not is_key_shaped(key):  # also: text that is not even UTF-8 is never hashed
        return None
    row = await conn.fetchrow(
        f"""
        SELECT k.id, k.account_id, k.scopes FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE k.key_hash = $1 AND a.disabled_at IS NULL AND {KEY_WORKS}
        """,
        hash_api_key(key),
    )
    if row is None:
        return None
    return Session(
        row["account_id"],
        row["id"],
        None,
        int(now) + SESSION_SECONDS,
        scopes=scopes_of(row["scopes"]),
    )


async def sign_in_with_grant(conn: Executor, grant: Grant, *, now: float) -> Session | None:
    """A new session for a dashboard link's account (None if it is disabled or gone, or the
    key the link was made under is revoked)."""
    session = Session(
        grant.account_id,
        grant.key_id,
        grant.campaign,
        min(grant.expires_at, int(now) + SESSION_SECONDS),
        from_link=True,
    )
    return await still_valid(conn, session)


LINK_SCOPES = frozenset({"stats:read"})  # all a dashboard link's session may ever do


async def still_valid(conn: Executor, session: Session) -> Session | None:
    """The session with its key's scopes now, if the account is enabled and the key it came
    from still works (not revoked nor expired); else None."""
    row = await conn.fetchrow(
        f"""
        SELECT k.scopes FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE k.id = $2 AND a.id = $1 AND a.disabled_at IS NULL AND {KEY_WORKS}
        """,
        session.account_id,
        session.key_id,
    )
    if row is None:
        return None
    scopes = scopes_of(row["scopes"])
    if session.from_link:
        scopes &= LINK_SCOPES
    return dataclasses.replace(session, scopes=scopes)


async def current(request: web.Request) -> Session | None:
    """The request's valid session, or None (no cookie, a bad one, or revoked since)."""
    if SESSION in request:
        return request[SESSION]
    value = request.cookies.get(COOKIE)
    signer = request.app.get(SIGNER)
    if not value or signer is None:
        return None
    signed = signer.session(value, now=time.time())
    session = (
        None
        if signed is None
        else await check_key(request, lambda db, _counted: still_valid(db, signed))
    )
    if session is None:
        request[STALE_COOKIE] = True
        return None
    request[SESSION] = session
    return session


async def forget_stale_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: clear a session cookie that `current` found to be no session
    (unless the answer sets a new one), on any answer: a page, a redirect, a JSON error."""
    if request.get(STALE_COOKIE) and COOKIE not in response.cookies:
        # The answer's own cookies are already in its headers when this hook runs.
        cleared = web.StreamResponse()
        clear_cookie(cleared, secure=request.app[API_CONFIG].dashboard.cookie_secure)
        response.headers.add(hdrs.SET_COOKIE, cleared.cookies[COOKIE].OutputString())


def set_cookie(
    response: web.StreamResponse, signer: Signer, session: Session, *, secure: bool
) -> None:
    response.set_cookie(
        COOKIE,
        signer.cookie(session),
        max_age=max(0, session.expires_at - int(time.time())),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


def clear_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=secure)


def same_origin(request: web.Request) -> bool:
    """A form posted from this site, by the browser's own word.

    Browsers mark every request with Sec-Fetch-Site; a form of another site is
    `cross-site` or `same-site`. Pages here send Referrer-Policy: no-referrer,
    under which browsers send `Origin: null` even for their own forms, so Origin
    is only taken when it names this host. Neither header: refused.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    _, _, host = origin.partition("://")
    return bool(host) and host == request.host


# The CSV routes also take the session cookie, so the dashboard's buttons work.
CSV_SUFFIXES = ("/clicks.csv", "/recipients.csv")


@web.middleware
async def csv_session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sign in a CSV download by its session cookie when it has no Authorization header."""
    if (
        request.method in ("GET", "HEAD")
        and request.path.startswith("/v1/campaigns/")
        and request.path.endswith(CSV_SUFFIXES)
        and "Authorization" not in request.headers
    ):
        session = await current(request)
        if session is not None:
            request[ACCOUNT_ID] = session.account_id
            request[KEY_ID] = session.key_id
            request[SCOPES] = session.scopes
            if session.campaign is not None:
                request[CAMPAIGN_SCOPE] = session.campaign
    return await handler(request)
