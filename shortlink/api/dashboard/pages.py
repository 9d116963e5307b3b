"""The dashboard's pages: sign-in and out, dashboard links, campaigns, one campaign."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shortlink.api.dashboard import charts, sessions
from shortlink.api.dashboard.render import page
from shortlink.api.keys import API_CONFIG
from shortlink.campaigns import recipients, series, stats, summaries
from shortlink.exceptions import BadCursor
from shortlink.pool import POOL, READ_POOL

PAGE_SIZE = 50
MAX_SEARCH = 200
# A page keeps refreshing itself while its campaign had taps this recently.
LIVE_WINDOW = timedelta(hours=1)
DEFAULT_PAGE = "/dashboard/campaigns"
_SAFE_NEXT = re.compile(r"^/dashboard/[A-Za-z0-9/_.~%?&=+-]*$")


def campaign_url(name: str, **query: str) -> str:
    path = f"/dashboard/campaigns/{quote(name, safe='')}"
    kept = {k: v for k, v in query.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


def _secure(request: web.Request) -> bool:
    return request.app[API_CONFIG].dashboard.cookie_secure


def problem(request: web.Request, status: int, title: str, message: str) -> web.Response:
    """A page that says what went wrong (the sign-in link below it)."""
    return page(request, "problem.html", {"title": title, "message": message}, status=status)


def cross_site(request: web.Request) -> web.Response:
    return problem(request, 403, "Refused", "The form was not sent from this site (Origin header).")


def refused(request: web.Request, scope: str) -> web.Response:
    """403: the session's key does not hold `scope`."""
    return problem(
        request,
        403,
        "Not allowed",
        f"The API key this session was opened with does not hold the scope {scope}.",
    )


class PageAnswer(Exception):
    """A page that ends the handler early (a refusal): the handler returns `response`.
    (Raising a web.HTTPException instead would reach the API's error middleware and
    become a JSON error.)"""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def signed_in(request: web.Request) -> sessions.Session:
    """The request's session, or a redirect to the sign-in form (which comes back here)."""
    session = await sessions.current(request)
    if session is None:
        target = request.path_qs
        raise web.HTTPSeeOther("/dashboard/signin?" + urlencode({"next": target}))
    return session


def home(session: sessions.Session) -> str:
    """The first page this session may see."""
    if session.may("stats:read"):
        return "/dashboard/campaigns"
    if session.may("keys:admin"):
        return "/dashboard/keys"
    if session.may("account:admin"):
        return "/dashboard/audit"
    return "/dashboard/campaigns"  # which says what the key lacks


def _redirect(location: str) -> NoReturn:
    raise web.HTTPSeeOther(location)


async def index(request: web.Request) -> web.Response:
    """GET /dashboard/: the first page the session may see, or the sign-in form."""
    _redirect(home(await signed_in(request)))


async def signin_form(request: web.Request) -> web.Response:
    """GET /dashboard/signin: the form that takes an API key."""
    return page(request, "signin.html", {"next": _next(request.query.get("next")), "error": None})


def _next(value: str | None) -> str:
    """Where to go after signing in: a dashboard page of this site, nothing else."""
    if value and _SAFE_NEXT.match(value) and "//" not in value:
        return value
    return DEFAULT_PAGE


async def signin(request: web.Request) -> web.Response:
    """POST /dashboard/signin: check the key, set the session cookie."""
    if not sessions.same_origin(request):
        return cross_site(request)
    try:
        form = await request.post()
    # An unknown charset, bytes it cannot decode, a multipart body without its boundary
    # or with broken part headers: the browser's own form is none of these.
    except (ValueError, LookupError, HttpProcessingError):
        return problem(request, 400, "Bad form", "The sign-in form could not be read.")
    key = str(form.get("api_key", "")).strip()
    target = _next(str(form.get("next", "")))
    session = await sessions.sign_in_with_key(request.app[POOL], key, now=time.time())
    if session is None:
        return page(
            request,
            "signin.html",
            {"next": target, "error": "That API key is not valid."},
            status=401,
        )
    if target == DEFAULT_PAGE:
        target = home(session)
    response = web.HTTPSeeOther(target)
    sessions.set_cookie(response, request.app[sessions.SIGNER], session, secure=_secure(request))
    raise response


async def signout(request: web.Request) -> web.Response:
    """POST /dashboard/signout: forget the session cookie."""
    if not sessions.same_origin(request):
        return cross_site(request)
    response = web.HTTPSeeOther("/dashboard/signin")
    sessions.clear_cookie(response, secure=_secure(request))
    raise response


async def link(request: web.Request) -> web.Response:
    """GET /dashboard/link/{token}: a dashboard link signs its account in."""
    now = time.time()
    grant = request.app[sessions.SIGNER].grant(request.match_info["token"], now=now)
    session = (
        await sessions.sign_in_with_grant(request.app[POOL], grant, now=now) if grant else None
    )
    if session is None:
        return problem(
            request, 403, "Link not valid", "This dashboard link is not valid or has expired."
        )
    target = campaign_url(session.campaign) if session.campaign else "/dashboard/campaigns"
    response = web.HTTPSeeOther(target)
    sessions.set_cookie(response, request.app[sessions.SIGNER], session, secure=_secure(request))
    raise response


async def campaigns(request: web.Request) -> web.Response:
    """GET /dashboard/campaigns?q=&cursor=: the account's campaigns, newest first."""
    session = await signed_in(request)
    if not session.may("stats:read"):
        return refused(request, "stats:read")
    # NUL cannot be stored, so no campaign's name holds one.
    search = request.query.get("q", "").replace("\x00", "").strip()[:MAX_SEARCH]
    cursor = request.query.get("cursor") or None
    try:
        items, next_cursor = await summaries.campaigns(
            request.app[READ_POOL],
            session.account_id,
            search=search or None,
            cursor=cursor,
            limit=PAGE_SIZE,
            only=session.campaign,
        )
    except BadCursor:
        return problem(request, 400, "Bad page", "That page link is not one this site made.")
    query = {"q": search} if search else {}
    next_url = (
        f"/dashboard/campaigns?{urlencode({**query, 'cursor': next_cursor})}"
        if next_cursor
        else None
    )
    return page(
        request,
        "campaigns.html",
        {
            "session": session,
            "campaigns": [
                {**item, "url": campaign_url(item["client_identifier"])} for item in items
            ],
            "search": search,
            "next_url": next_url,
            "first_page": cursor is not None,
        },
    )


def _encodable(text: str) -> bool:
    """Whether `text` could be stored (a path can carry bytes that are not UTF-8)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def campaign(request: web.Request) -> web.Response:
    """GET /dashboard/campaigns/{name}?phone=&cursor=: figures, charts and recipients."""
    session = await signed_in(request)
    if not session.may("stats:read"):
        return refused(request, "stats:read")
    name = request.match_info["name"]
    pool = request.app[READ_POOL]
    headline = (
        await summaries.campaign(pool, session.account_id, name)
        if session.sees(name) and "\x00" not in name and _encodable(name)
        else None
    )
    breakdown = await stats.campaign(pool, session.account_id, name) if headline else None
    if headline is None or breakdown is None:
        return problem(request, 404, "No such campaign", "This account has no such campaign.")
    phone_query = request.query.get("phone", "").strip()[:MAX_SEARCH]
    digits = re.sub(r"\D", "", phone_query)
    cursor = request.query.get("cursor") or None
    try:
        listed, next_cursor = await recipients.recipients(
            pool,
            session.account_id,
            name,
            phone_prefix=digits or None,
            cursor=cursor,
            limit=PAGE_SIZE,
        )
    except BadCursor:
        return problem(request, 400, "Bad page", "That page link is not one this site made.")
    now = datetime.now(UTC)
    taps = await series.series(pool, session.account_id, name, headline["created_at"], now=now)
    histogram = await stats.first_tap_histogram(pool, session.account_id, name)
    last = headline["last_activity"]
    live = last is not None and now - last < LIVE_WINDOW
    context: dict[str, Any] = {
        "session": session,
        "campaign": headline,
        "median": breakdown["median_seconds_to_first_click"],
        "p90": breakdown["p90_seconds_to_first_click"],
        "series": charts.series_data(taps),
        "first_taps": charts.first_tap_bars(histogram),
        "breakdowns": [
            ("Device type", charts.bars(breakdown["by_device_type"])),
            ("OS", charts.bars(breakdown["by_os"])),
            ("Browser", charts.bars(breakdown["by_browser"])),
            ("Country", charts.bars(breakdown["by_country"])),
        ],
        "conversions": breakdown["conversions"],
        "conversion_rate": breakdown["conversion_rate"],
        "conversion_bars": charts.bars(
            {
                event: counts["positive"]
                for event, counts in breakdown["conversions"]["by_event"].items()
                if counts["positive"]
            }
        ),
        "destinations": [
            (
                title,
                key,
                breakdown[key],
                charts.bars(
                    {
                        f"{label} {group['url'] or ''}".strip(): group["clicks"]
                        for label, group in breakdown[key].items()
                    }
                ),
            )
            for title, key in (("Variant", "by_variant"), ("Rule", "by_rule"))
            if set(breakdown[key]) - {"none"}
        ],
        "recipients": listed,
        "phone_query": phone_query,
        "phone_digits": digits,
        "next_url": campaign_url(name, phone=phone_query, cursor=next_cursor or "")
        if next_cursor
        else None,
        "first_url": campaign_url(name, phone=phone_query) if cursor else None,
        "refresh_seconds": request.app[API_CONFIG].dashboard.refresh_seconds if live else None,
        "csv_base": f"/v1/campaigns/{quote(name, safe='')}",
    }
    return page(request, "campaign.html", context)
