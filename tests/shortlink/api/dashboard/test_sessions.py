"""Sessions: signed, expiring cookies and dashboard links; sign-in and out; CSRF refusal."""

from __future__ import annotations

import time

import aiohttp
import asyncpg
import orjson
import pytest
from itsdangerous import URLSafeSerializer

from shortlink import accounts
from shortlink.api.config import DashboardConfig
from shortlink.api.dashboard.sessions import COOKIE, Grant, Session, Signer, dashboard_link
from shortlink.exceptions import ConfigError
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Tenant, raw_request
from tests.shortlink.api.dashboard.conftest import SECRET, tapped_campaign

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


async def key_of(db: asyncpg.Connection, tenant: Tenant) -> int:
    """The id of the tenant's API key (what a dashboard link is made under)."""
    key_id = await accounts.current_key(db, tenant.account_id)
    assert key_id is not None
    return key_id


def cookie_of(response: aiohttp.ClientResponse) -> str:
    return response.cookies[COOKIE].value


async def sign_in(server: RunningServer, http: aiohttp.ClientSession, key: str) -> str:
    async with http.post(
        f"{server.url}/dashboard/signin",
        data={"api_key": key},
        headers=SAME_ORIGIN,
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        return cookie_of(response)


async def page_status(
    server: RunningServer, http: aiohttp.ClientSession, path: str, cookie: str
) -> tuple[int, str]:
    async with http.get(
        server.url + path, headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
    ) as response:
        return response.status, response.headers.get("Location", "")


def tamper(value: str) -> str:
    """`value` with the first character of its signed payload changed.

    Not a last character: in unpadded base64 its lowest bits carry no data, so
    changing A to B there can leave the decoded bytes as they were (a flaky test).
    """
    return ("A" if value[0] != "A" else "B") + value[1:]


def test_cookie_round_trip_and_tampering() -> None:
    """A cookie reads back as its session; one changed character, or another secret, voids it."""
    signer = Signer(SECRET)
    session = Session(7, 3, None, int(time.time()) + 60)
    value = signer.cookie(session)
    assert signer.session(value, now=time.time()) == session
    assert signer.session(tamper(value), now=time.time()) is None
    assert Signer(SECRET + "x").session(value, now=time.time()) is None
    assert signer.session("not-a-cookie", now=time.time()) is None


def test_expired_cookie_and_link_are_refused() -> None:
    """Past its expiry a cookie or a link is worth nothing."""
    signer = Signer(SECRET)
    now = time.time()
    cookie = signer.cookie(Session(7, 3, None, int(now) + 10))
    link = signer.link_token(Grant(7, 3, None, int(now) + 10))
    assert signer.session(cookie, now=now + 11) is None
    assert signer.grant(link, now=now + 11) is None
    assert signer.grant(link, now=now) == Grant(7, 3, None, int(now) + 10)


def test_a_link_is_not_a_cookie() -> None:
    """Cookies and links are signed apart: neither passes as the other."""
    signer = Signer(SECRET)
    later = int(time.time()) + 60
    link = signer.link_token(Grant(7, 3, None, later))
    cookie = signer.cookie(Session(7, 3, None, later))
    assert signer.session(link, now=time.time()) is None
    assert signer.grant(cookie, now=time.time()) is None


def test_dashboard_needs_a_long_secret() -> None:
    """DASHBOARD_ENABLED without a secret, or with a short one, stops the API starting."""
    with pytest.raises(ConfigError, match="DASHBOARD_SECRET is not set"):
        DashboardConfig.from_env({"DASHBOARD_ENABLED": "true"})
    with pytest.raises(ConfigError, match="at least 32"):
        DashboardConfig.from_env({"DASHBOARD_ENABLED": "true", "DASHBOARD_SECRET": "short"})
    assert DashboardConfig.from_env({}).enabled is False


async def test_sign_in_sets_a_strict_http_only_cookie(
    dashboard: RunningServer, http: aiohttp.ClientSession, tenant: Tenant
) -> None:
    """A valid key gets a 12-hour HttpOnly SameSite=Strict cookie (not Secure over http)."""
    async with http.post(
        f"{dashboard.url}/dashboard/signin",
        data={"api_key": tenant.key, "next": "/dashboard/campaigns?q=x"},
        headers=SAME_ORIGIN,
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard/campaigns?q=x"
        header = response.headers["Set-Cookie"]
    morsel = response.cookies[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["max-age"] == str(12 * 3600)
    assert morsel["path"] == "/"
    assert "Secure" not in header


async def test_cookie_is_secure_when_the_site_is_https(
    dashboard_env: dict[str, str], http: aiohttp.ClientSession, tenant: Tenant
) -> None:
    """With SHORT_URL_SCHEME=https the session cookie is marked Secure."""
    from shortlink.api.app import create_app
    from shortlink.api.config import ApiConfig
    from tests.infra import running

    env = {**dashboard_env, "SHORT_URL_SCHEME": "https"}
    async with running(create_app(ApiConfig.from_env(env))) as server:
        async with http.post(
            f"{server.url}/dashboard/signin",
            data={"api_key": tenant.key},
            headers=SAME_ORIGIN,
            allow_redirects=False,
        ) as response:
            assert response.status == 303
            assert response.cookies[COOKIE]["secure"] is True


async def test_wrong_key_and_cross_site_posts_get_no_cookie(
    dashboard: RunningServer, http: aiohttp.ClientSession, tenant: Tenant
) -> None:
    """A bad key is a 401; a form from another site (or of unknown origin) is a 403."""
    cases = [
        ({"api_key": "sl_nope"}, SAME_ORIGIN, 401),
        ({"api_key": tenant.key}, {"Sec-Fetch-Site": "cross-site"}, 403),
        ({"api_key": tenant.key}, {"Sec-Fetch-Site": "same-site"}, 403),
        ({"api_key": tenant.key}, {"Origin": "http://evil.example"}, 403),
        ({"api_key": tenant.key}, {"Origin": "null"}, 403),
        ({"api_key": tenant.key}, {}, 403),
    ]
    for data, headers, status in cases:
        async with http.post(
            f"{dashboard.url}/dashboard/signin",
            data=data,
            headers=headers,
            allow_redirects=False,
        ) as response:
            assert response.status == status, (data, headers)
            assert COOKIE not in response.cookies
    async with http.post(
        f"{dashboard.url}/dashboard/signout",
        headers={"Sec-Fetch-Site": "cross-site"},
        allow_redirects=False,
    ) as response:
        assert response.status == 403


FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=zz"


def part(name: str, value: bytes, headers: bytes = b"") -> bytes:
    return (
        b'--zz\r\nContent-Disposition: form-data; name="'
        + name.encode()
        + b'"\r\n'
        + headers
        + b"\r\n"
        + value
        + b"\r\n--zz--\r\n"
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (f"{FORM}; charset=bogus", b"api_key=sl_x"),
        (f"{FORM}; charset=utf-16", b"api_key=sl_x"),
        ("multipart/form-data", b"api_key=sl_x"),
        ("multipart/form-data; boundary=", b"--\r\n"),
        (MULTIPART, part("api_key", b"\xff\xfe")),
        (MULTIPART, part("api_key", b"sl_x", b"Content-Type: text/plain; charset=bogus\r\n")),
        (MULTIPART, b"--zz\r\ngarbage without an end"),
        (MULTIPART, b"\xff" * 100),
        # UTF-7 decodes to a lone surrogate: text that is not even UTF-8 (review of issue 21)
        (f"{FORM}; charset=utf-7", b"api_key=sl_+2AA-"),
        (MULTIPART, part("api_key", b"sl_+2AA-", b"Content-Type: text/plain; charset=utf-7\r\n")),
    ],
)
async def test_a_sign_in_form_that_cannot_be_read_is_a_4xx(
    dashboard: RunningServer, content_type: str, body: bytes
) -> None:
    """A form in an unknown charset, undecodable or malformed is refused (4xx), never a 500."""
    headers = [b"Content-Type: " + content_type.encode(), b"Sec-Fetch-Site: same-origin"]
    answer = await raw_request(dashboard, "POST", b"/dashboard/signin", headers, body)
    assert 400 <= answer.status < 500, answer.body
    assert "Set-Cookie" not in answer.headers


async def test_sign_in_goes_only_to_dashboard_pages(
    dashboard: RunningServer, http: aiohttp.ClientSession, tenant: Tenant
) -> None:
    """The next field cannot send the browser elsewhere (no open redirect)."""
    for target in ("https://evil.example/", "//evil.example/x", "/v1/links", "/dashboard//x"):
        async with http.post(
            f"{dashboard.url}/dashboard/signin",
            data={"api_key": tenant.key, "next": target},
            headers=SAME_ORIGIN,
            allow_redirects=False,
        ) as response:
            assert response.headers["Location"] == "/dashboard/campaigns", target


STALE_VALUES = [b"\xff", b"\xc3\xa9t\xc3\xa9", b"not.signed", b"a" * 4000, b"W10.x.y"]


@pytest.mark.parametrize("value", STALE_VALUES)
@pytest.mark.parametrize(
    "path",
    [
        b"/dashboard/",
        b"/dashboard/campaigns",
        b"/v1/campaigns/spring/clicks.csv",
        b"/v1/campaigns/spring/recipients.csv",
    ],
)
async def test_a_cookie_that_is_no_session_is_ignored_and_cleared(
    dashboard: RunningServer, value: bytes, path: bytes
) -> None:
    """Any bytes as the session cookie are no session (sign-in, or a JSON 401), and cleared."""
    answer = await raw_request(
        dashboard, "GET", path, [b"Cookie: " + COOKIE.encode() + b"=" + value]
    )
    if path.startswith(b"/dashboard"):
        assert answer.status == 303
        assert answer.headers["Location"].startswith("/dashboard/signin?next=")
    else:
        assert answer.status == 401
        assert orjson.loads(answer.body)["error"]["code"] == "unauthorized"
    cleared = answer.headers["Set-Cookie"]
    assert cleared.startswith(f'{COOKIE}="";')
    assert "Max-Age=0" in cleared


async def test_session_opens_pages_until_tampered_revoked_or_signed_out(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A session reads pages; a tampered cookie, a revoked key or signing out sends to sign-in."""
    cookie = await sign_in(dashboard, http, tenant.key)
    assert await page_status(dashboard, http, "/dashboard/campaigns", cookie) == (200, "")
    assert (await page_status(dashboard, http, "/dashboard/campaigns", tamper(cookie)))[0] == 303
    async with http.post(
        f"{dashboard.url}/dashboard/signout",
        headers={**SAME_ORIGIN, "Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        assert response.cookies[COOKIE].value == ""
    await accounts.rotate_key(db, tenant.account_id)
    status, location = await page_status(dashboard, http, "/dashboard/campaigns", cookie)
    assert status == 303
    assert location.startswith("/dashboard/signin?next=")


async def test_dashboard_link_signs_in_one_campaign(
    dashboard: RunningServer,
    dashboard_env: dict[str, str],
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
) -> None:
    """A link for one campaign opens its page, and its session sees no other campaign."""
    await tapped_campaign(db, tenant, "shared")
    await tapped_campaign(db, tenant, "private")
    config = DashboardConfig.from_env(dashboard_env)
    key_id = await key_of(db, tenant)
    url = dashboard_link(
        config, Grant(tenant.account_id, key_id, "shared", int(time.time()) + 3600)
    )
    token = url.rsplit("/", 1)[1]
    async with http.get(
        f"{dashboard.url}/dashboard/link/{token}", allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard/campaigns/shared"
        cookie = cookie_of(response)
        assert int(response.cookies[COOKIE]["max-age"]) <= 3600
    assert (await page_status(dashboard, http, "/dashboard/campaigns/shared", cookie))[0] == 200
    assert (await page_status(dashboard, http, "/dashboard/campaigns/private", cookie))[0] == 404
    async with http.get(
        f"{dashboard.url}/dashboard/campaigns", headers={"Cookie": f"{COOKIE}={cookie}"}
    ) as response:
        listing = await response.text()
    assert "/dashboard/campaigns/shared" in listing
    assert "/dashboard/campaigns/private" not in listing


async def open_link(server: RunningServer, http: aiohttp.ClientSession, url: str) -> str | None:
    """Open a dashboard link: the session cookie it sets, or None when it is refused (403)."""
    token = url.rsplit("/", 1)[1]
    async with http.get(f"{server.url}/dashboard/link/{token}", allow_redirects=False) as r:
        if r.status == 403:
            return None
        assert r.status == 303
        return cookie_of(r)


async def revoke(db: asyncpg.Connection, tenant: Tenant, how: str) -> None:
    """End the tenant's key: `shortlink account rotate-key`'s way, or that one key revoked."""
    if how == "rotate":
        assert await accounts.rotate_key(db, tenant.account_id) is not None
    else:
        key_id = await key_of(db, tenant)
        await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)


@pytest.mark.parametrize("how", ["rotate", "revoke"])
async def test_a_link_and_its_sessions_end_with_the_key_it_was_made_under(
    dashboard: RunningServer,
    dashboard_env: dict[str, str],
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
    how: str,
) -> None:
    """Rotating or revoking a link's API key ends the session it opened and voids the link."""
    await tapped_campaign(db, tenant, "shared")
    config = DashboardConfig.from_env(dashboard_env)
    later = int(time.time()) + 3600
    url = dashboard_link(config, Grant(tenant.account_id, await key_of(db, tenant), None, later))
    cookie = await open_link(dashboard, http, url)
    assert cookie is not None
    assert await page_status(dashboard, http, "/dashboard/campaigns/shared", cookie) == (200, "")
    async with http.get(
        f"{dashboard.url}/v1/campaigns/shared/clicks.csv", headers={"Cookie": f"{COOKIE}={cookie}"}
    ) as response:
        assert response.status == 200
    await revoke(db, tenant, how)
    status, location = await page_status(dashboard, http, "/dashboard/campaigns/shared", cookie)
    assert (status, location.split("?")[0]) == (303, "/dashboard/signin")
    async with http.get(
        f"{dashboard.url}/v1/campaigns/shared/clicks.csv", headers={"Cookie": f"{COOKIE}={cookie}"}
    ) as response:
        assert response.status == 401
    assert await open_link(dashboard, http, url) is None
    if how == "rotate":
        fresh = Grant(tenant.account_id, await key_of(db, tenant), None, later)
        assert await open_link(dashboard, http, dashboard_link(config, fresh)) is not None


@pytest.mark.parametrize("how", ["rotate", "revoke"])
async def test_a_key_sign_in_ends_with_its_key(
    dashboard: RunningServer,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
    how: str,
) -> None:
    """A session signed in with an API key ends when that key is rotated away or revoked."""
    cookie = await sign_in(dashboard, http, tenant.key)
    assert await page_status(dashboard, http, "/dashboard/campaigns", cookie) == (200, "")
    await revoke(db, tenant, how)
    assert (await page_status(dashboard, http, "/dashboard/campaigns", cookie))[0] == 303


async def test_links_and_cookies_that_name_no_key_are_refused(
    dashboard: RunningServer, http: aiohttp.ClientSession, tenant: Tenant
) -> None:
    """A link or cookie of the old form, which names no API key, opens nothing."""
    later = int(time.time()) + 3600
    link = URLSafeSerializer(SECRET, salt="shortlink.dashboard.link")
    token = str(link.dumps([tenant.account_id, None, later]))
    assert await open_link(dashboard, http, f"/dashboard/link/{token}") is None
    cookie = URLSafeSerializer(SECRET, salt="shortlink.dashboard.session")
    old = str(cookie.dumps([tenant.account_id, None, None, later]))
    assert (await page_status(dashboard, http, "/dashboard/campaigns", old))[0] == 303


async def test_bad_expired_or_disabled_links_are_refused(
    dashboard: RunningServer,
    dashboard_env: dict[str, str],
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
) -> None:
    """A tampered or expired link, or one for a disabled account, sets no cookie (403)."""
    signer = Signer(SECRET)
    key_id = await key_of(db, tenant)
    good = signer.link_token(Grant(tenant.account_id, key_id, None, int(time.time()) + 3600))
    expired = signer.link_token(Grant(tenant.account_id, key_id, None, int(time.time()) - 1))
    forged = Signer("another-secret-of-32-characters-or-more").link_token(
        Grant(tenant.account_id, key_id, None, int(time.time()) + 3600)
    )
    for token in (tamper(good), expired, forged):
        async with http.get(
            f"{dashboard.url}/dashboard/link/{token}", allow_redirects=False
        ) as response:
            assert response.status == 403
            assert COOKIE not in response.cookies
    await accounts.disable_account(db, tenant.account_id)
    async with http.get(f"{dashboard.url}/dashboard/link/{good}", allow_redirects=False) as r:
        assert r.status == 403


async def test_dashboard_is_off_unless_enabled(
    api_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """Without DASHBOARD_ENABLED the pages do not exist (the API docs still do)."""
    async with http.get(f"{api_server.url}/dashboard/signin") as response:
        assert response.status == 404
    async with http.get(f"{api_server.url}/v1/docs") as response:
        assert response.status == 200
