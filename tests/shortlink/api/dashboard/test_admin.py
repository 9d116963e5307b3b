"""The dashboard's keys and audit pages, and sessions that carry their key's scopes."""

from __future__ import annotations

import re
import time

import aiohttp
import asyncpg
import pytest

from shortlink import accounts, audit, domains
from shortlink.api.dashboard.sessions import Grant, Signer
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Tenant
from tests.shortlink.api.dashboard.conftest import SECRET, tapped_campaign
from tests.shortlink.api.dashboard.test_pages import XSS, fetch
from tests.shortlink.api.dashboard.test_sessions import COOKIE, SAME_ORIGIN, sign_in


async def scoped_key(db: asyncpg.Connection, tenant: Tenant, *scopes: str, name: str = "k") -> str:
    async with db.transaction():
        made = await accounts.create_key(
            db, tenant.account_id, name=name, scopes=scopes, expires_at=None
        )
    return made.key


async def keys_of(db: asyncpg.Connection, tenant: Tenant) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    return count


async def post_form(
    server: RunningServer,
    http: aiohttp.ClientSession,
    path: str,
    cookie: str,
    data: list[tuple[str, str]] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    async with http.post(
        server.url + path,
        data=data or [],
        headers={"Cookie": f"{COOKIE}={cookie}", **(SAME_ORIGIN if headers is None else headers)},
        allow_redirects=False,
    ) as response:
        return response.status, response.headers.get("Location", ""), await response.text()


async def test_the_keys_page_lists_makes_and_revokes_keys(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Signed in with an all-powerful key: the page lists the keys (name, prefix, scopes,
    last used, expiry); the form makes a key and shows its secret once; revoke stops it;
    both changes are in the audit log under the session's key."""
    cookie = await sign_in(dashboard, http, tenant.key)
    status, _, html = await fetch(dashboard, http, "/dashboard/keys", cookie)
    assert status == 200
    assert tenant.key[: accounts.PREFIX_LENGTH] in html
    assert tenant.key not in html
    status, _, html = await post_form(
        dashboard,
        http,
        "/dashboard/keys",
        cookie,
        [
            ("name", "CRM"),
            ("scopes", "conversions:write"),
            ("scopes", "stats:read"),
            ("expires_in_days", "30"),
        ],
    )
    assert status == 201
    secret = re.search(r'<code class="secret" id="secret">(sl_[A-Za-z0-9_-]{43})</code>', html)
    assert secret is not None
    key = secret[1]
    assert await accounts.authenticate(db, key) == tenant.account_id
    status, _, html = await fetch(dashboard, http, "/dashboard/keys", cookie)
    assert key not in html  # shown once
    assert "CRM" in html
    assert "stats:read, conversions:write" in html
    key_id = await db.fetchval(
        "SELECT id FROM api_keys WHERE key_hash = $1", accounts.hash_api_key(key)
    )
    status, location, _ = await post_form(
        dashboard, http, f"/dashboard/keys/{key_id}/revoke", cookie
    )
    assert (status, location) == (303, "/dashboard/keys")
    assert await accounts.authenticate(db, key) is None
    own = await db.fetchval(
        "SELECT id FROM api_keys WHERE key_hash = $1", accounts.hash_api_key(tenant.key)
    )
    log, _ = await audit.entries(db, tenant.account_id, cursor=None, limit=10)
    assert [(e["action"], e["key_id"]) for e in log] == [
        ("key.revoked", own),
        ("key.created", own),
    ]


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ([("name", ""), ("scopes", "stats:read")], "name"),
        ([("name", "x")], "scopes"),
        ([("name", "x"), ("scopes", "root")], "scopes[0]"),
        ([("name", XSS), ("scopes", XSS)], "scopes[0]"),
        ([("name", "x"), ("scopes", "stats:read"), ("expires_in_days", "0")], "expires_in_days"),
        ([("name", "x"), ("scopes", "stats:read"), ("expires_in_days", "1e3")], "expires_in_days"),
    ],
)
async def test_a_bad_key_form_says_why_and_makes_nothing(
    dashboard: RunningServer,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
    form: list[tuple[str, str]],
    field: str,
) -> None:
    """A bad form is answered 422 naming the field (escaped), and no key is made."""
    cookie = await sign_in(dashboard, http, tenant.key)
    status, _, html = await post_form(dashboard, http, "/dashboard/keys", cookie, form)
    assert status == 422
    assert f"<li>{field}: " in html
    assert XSS not in html
    count = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    assert count == 1


async def test_forms_from_another_site_are_refused(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A make or revoke form the browser marks cross-site (or does not mark) is a 403 that
    changes nothing."""
    cookie = await sign_in(dashboard, http, tenant.key)
    own = await db.fetchval("SELECT id FROM api_keys WHERE account_id = $1", tenant.account_id)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {}):
        status, _, _ = await post_form(
            dashboard,
            http,
            "/dashboard/keys",
            cookie,
            [("name", "x"), ("scopes", "stats:read")],
            headers=headers,
        )
        assert status == 403
        status, _, _ = await post_form(
            dashboard, http, f"/dashboard/keys/{own}/revoke", cookie, headers=headers
        )
        assert status == 403
    assert await accounts.authenticate(db, tenant.key) == tenant.account_id
    count = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    assert count == 1


async def test_a_session_carries_only_its_keys_scopes(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A session opened with a stats:read key reads campaigns and CSV files but gets 403 on
    the keys and audit pages and their forms; one with keys:admin alone manages keys but
    reads no statistics, not even a CSV file."""
    await tapped_campaign(db, tenant, "spring")
    reader = await sign_in(dashboard, http, await scoped_key(db, tenant, "stats:read"))
    assert (await fetch(dashboard, http, "/dashboard/campaigns", reader))[0] == 200
    assert (await fetch(dashboard, http, "/v1/campaigns/spring/clicks.csv", reader))[0] == 200
    for path in ("/dashboard/keys", "/dashboard/audit"):
        status, _, html = await fetch(dashboard, http, path, reader)
        assert status == 403, path
    status, _, html = await post_form(
        dashboard, http, "/dashboard/keys", reader, [("name", "x"), ("scopes", "keys:admin")]
    )
    assert status == 403
    assert "keys:admin" in html
    admin_key = await scoped_key(db, tenant, "keys:admin")
    async with http.post(
        f"{dashboard.url}/dashboard/signin",
        data={"api_key": admin_key},
        headers=SAME_ORIGIN,
        allow_redirects=False,
    ) as response:
        assert response.headers["Location"] == "/dashboard/keys"  # its first page
        admin = response.cookies[COOKIE].value
    assert (await fetch(dashboard, http, "/dashboard/keys", admin))[0] == 200
    status, _, html = await fetch(dashboard, http, "/dashboard/campaigns", admin)
    assert status == 403
    assert "stats:read" in html
    status, _, body = await fetch(dashboard, http, "/v1/campaigns/spring/clicks.csv", admin)
    assert status == 403
    assert "stats:read" in body


async def test_a_dashboard_link_only_reads_whatever_its_key_holds(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A session opened by a dashboard link made under an all-powerful key reads statistics
    but cannot see the keys or audit pages."""
    key_id = await accounts.current_key(db, tenant.account_id)
    assert key_id is not None
    token = Signer(SECRET).link_token(
        Grant(tenant.account_id, key_id, None, int(time.time()) + 600)
    )
    async with http.get(f"{dashboard.url}/dashboard/link/{token}", allow_redirects=False) as r:
        assert r.status == 303
        cookie = r.cookies[COOKIE].value
    assert (await fetch(dashboard, http, "/dashboard/campaigns", cookie))[0] == 200
    assert (await fetch(dashboard, http, "/dashboard/keys", cookie))[0] == 403
    assert (await fetch(dashboard, http, "/dashboard/audit", cookie))[0] == 403


async def test_the_audit_page_lists_entries_escaped_and_paged(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """The audit page shows each entry's action, key, address and summary, escaped, newest
    first, 50 a page with a link to the next; a made-up cursor is a 400 page."""
    for index in range(51):
        await audit.record(
            db, tenant.account_id, None, "198.51.100.7", "key.created", {"name": f"{XSS}{index}"}
        )
    cookie = await sign_in(dashboard, http, tenant.key)
    status, _, html = await fetch(dashboard, http, "/dashboard/audit", cookie)
    assert status == 200
    assert XSS not in html
    assert "&lt;img src=x onerror=alert(1)&gt;50" in html
    assert "198.51.100.7" in html
    assert "&lt;img src=x onerror=alert(1)&gt;0<" not in html
    next_url = re.search(r'<a href="([^"]+)" id="next-page">', html)
    assert next_url is not None
    status, _, html = await fetch(dashboard, http, next_url[1].replace("&amp;", "&"), cookie)
    assert status == 200
    assert "&lt;img src=x onerror=alert(1)&gt;0<" in html
    assert (await fetch(dashboard, http, "/dashboard/audit?cursor=zz", cookie))[0] == 400


async def test_the_domains_page_lists_domains_their_state_and_txt_record(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Each domain with its verification state and the TXT record to add, escaped; account
    admin only, like /v1/domains."""
    name = f"dash{tenant.account_id}.brand.example"
    added = await domains.add(db, tenant.account_id, name)
    await domains.add(db, tenant.account_id, f"ok{tenant.account_id}.brand.example", verified=True)
    # Not a name the API accepts: stored directly, to show the page escapes whatever it holds.
    await db.execute(
        "INSERT INTO domains (name, account_id, verification) VALUES ($1, $2, $3)",
        f"{XSS}{tenant.account_id}",
        tenant.account_id,
        "v" * 20,
    )
    cookie = await sign_in(dashboard, http, tenant.key)
    status, _, html = await fetch(dashboard, http, "/dashboard/domains", cookie)
    assert status == 200
    assert XSS not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert f"_shortlink-challenge.{name}" in html
    assert added["verification"] in html
    assert "waiting for the TXT record" in html
    assert ">verified<" in html
    assert 'href="/dashboard/domains"' in html
