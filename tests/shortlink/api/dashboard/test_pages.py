"""The pages as HTML: security headers, escaping, no inline script, search and paging."""

from __future__ import annotations

import re

import aiohttp
import asyncpg
import orjson
import pytest

from forwarder.recorder import record
from loadtests import cluster
from shortlink import links
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from shortlink.api.dashboard import pages
from shortlink.api.dashboard.render import CONTENT_SECURITY_POLICY
from tests.clicks import clicks, make_links
from tests.infra import RunningServer, running
from tests.shortlink.api.conftest import Tenant, raw_request
from tests.shortlink.api.dashboard.conftest import events, tapped_campaign
from tests.shortlink.api.dashboard.test_sessions import COOKIE, sign_in

XSS = "<img src=x onerror=alert(1)>"


async def fetch(
    server: RunningServer, http: aiohttp.ClientSession, path: str, cookie: str
) -> tuple[int, dict[str, str], str]:
    async with http.get(
        server.url + path, headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
    ) as response:
        return response.status, dict(response.headers), await response.text()


async def test_pages_send_a_strict_policy_and_no_inline_script(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Every page: CSP without unsafe-*, no framing, no referrer; scripts only from files."""
    await tapped_campaign(db, tenant, "spring")
    cookie = await sign_in(dashboard, http, tenant.key)
    for path in (
        "/dashboard/signin",
        "/dashboard/campaigns",
        "/dashboard/campaigns/spring",
        "/dashboard/campaigns/none-such",
        "/v1/docs",
    ):
        status, headers, html = await fetch(dashboard, http, path, cookie)
        assert status in (200, 404), path
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "unsafe" not in CONTENT_SECURITY_POLICY
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)
        assert " style=" not in html
        assert "<style" not in html
        assert re.search(r"\son[a-z]+=", html) is None, path


@pytest.mark.parametrize(
    "name",
    [
        b"a" * 5000,  # a file name the file system refuses as too long: it was a 503
        b"%F0%9F%98%80" * 80,
        b"x/" * 2000 + b"y",
        b"..%2F..%2Fetc/passwd",
        b"%2e%2e/%2e%2e/etc/passwd",
        b".hidden",
        b"%00",
        b"dashboard",
        b"dashboard/",
        b"dashboard/dashboard.css/x",
        b"no-such-file.js",
    ],
)
async def test_a_static_name_that_is_no_file_is_a_json_404(
    dashboard: RunningServer, name: bytes
) -> None:
    """Any name under /static/ that is not one of the package's files is a JSON 404."""
    answer = await raw_request(dashboard, "GET", b"/static/" + name, [])
    assert answer.status == 404, answer.body[:200]
    assert orjson.loads(answer.body)["error"]["code"] == "not_found"


async def test_static_files_are_served_with_the_page_headers(dashboard: RunningServer) -> None:
    """The package's static files are served, with the pages' security headers."""
    answer = await raw_request(dashboard, "GET", b"/static/dashboard/dashboard.css", [])
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/css")
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    licence = b"/static/vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"
    assert (await raw_request(dashboard, "GET", licence, [])).status == 200


async def test_customer_strings_are_escaped(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A campaign name and a client_ref holding HTML reach the page escaped."""
    made = await make_links(db, tenant.account_id, 2, client_identifier=XSS)
    await db.execute("UPDATE links SET client_ref = $1 WHERE id = $2", XSS, made[0].id)
    await record(db, events(clicks(made[:1])), batch_size=100)
    cookie = await sign_in(dashboard, http, tenant.key)
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    _, _, listing = await fetch(dashboard, http, "/dashboard/campaigns", cookie)
    assert XSS not in listing
    assert escaped in listing
    url = pages.campaign_url(XSS)
    status, _, html = await fetch(dashboard, http, url, cookie)
    assert status == 200
    assert XSS not in html
    assert html.count(escaped) >= 3  # title, heading, recipients table


async def test_campaigns_page_searches_names(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """The search box keeps campaigns whose name contains the text, any case."""
    for name in ("Spring-Sale", "autumn", "spring_2"):
        await make_links(db, tenant.account_id, 1, client_identifier=name)
    cookie = await sign_in(dashboard, http, tenant.key)
    _, _, html = await fetch(dashboard, http, "/dashboard/campaigns?q=SPRING", cookie)
    names = re.findall(r'<td class="name"><a href="[^"]+">([^<]+)</a>', html)
    assert names == ["spring_2", "Spring-Sale"]  # newest first


async def test_recipients_are_searched_and_paged_by_phone_number(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """The recipients table pages 50 at a time, by phone number, and finds a number's prefix."""
    await make_links(db, tenant.account_id, 60, client_identifier="big")
    cookie = await sign_in(dashboard, http, tenant.key)
    phone = re.compile(r'<td class="phone">(\d+)</td>')
    _, _, first = await fetch(dashboard, http, "/dashboard/campaigns/big", cookie)
    page_one = phone.findall(first)
    assert len(page_one) == pages.PAGE_SIZE
    [next_url] = re.findall(r'<a href="([^"]+)" id="next-page">', first)
    _, _, second = await fetch(dashboard, http, next_url.replace("&amp;", "&"), cookie)
    page_two = phone.findall(second)
    assert len(page_two) == 10
    assert page_one + page_two == sorted(f"4477009{i:05d}" for i in range(60))
    search = "/dashboard/campaigns/big?phone=%2B44+7700+90005"
    _, _, found = await fetch(dashboard, http, search, cookie)
    assert phone.findall(found) == [f"4477009000{i}" for i in range(50, 60)]
    status, _, _ = await fetch(dashboard, http, "/dashboard/campaigns/big?cursor=bad", cookie)
    assert status == 400


async def test_a_campaign_page_shows_its_conversions_when_there_are_some(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """No conversions section until the enterprise posts one; then its counts, converted
    links, rate, values and events."""
    campaign = await tapped_campaign(db, tenant, "converting")
    cookie = await sign_in(dashboard, http, tenant.key)
    path = "/dashboard/campaigns/converting"
    _, _, html = await fetch(dashboard, http, path, cookie)
    assert 'id="conversions"' not in html
    headers = {"Authorization": f"Bearer {tenant.key}"}
    for link, event, disposition, value in (
        (campaign.links[0], "purchase", "positive", 12.5),
        (campaign.links[1], "purchase", "positive", 7.5),
        (campaign.links[2], "refusal", "negative", None),
    ):
        body: dict[str, object] = {"token": link.token, "event": event, "disposition": disposition}
        if value is not None:
            body |= {"value": value, "currency": "EUR"}
        async with http.post(dashboard.url + "/v1/conversions", json=body, headers=headers) as r:
            assert r.status == 201
    _, _, html = await fetch(dashboard, http, path, cookie)
    figures = dict(
        re.findall(r'<span class="v" id="(fig-conv[a-z-]*|fig-converted)">([^<]+)', html)
    )
    assert figures == {
        "fig-conv-positive": "2",
        "fig-conv-negative": "1",
        "fig-converted": "2",
        "fig-conv-rate": "33.3%",  # 2 of 6 links
    }
    assert '<span class="v conv-value">20.0 EUR</span>' in html
    assert 'data-label="purchase" data-value="2"' in html


async def test_the_cluster_report_signs_in_and_times_the_campaign_page(
    api_env: dict[str, str], database_url: str, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """make cluster's sampler, on the API as the cluster configures it (plain http), gets a
    session cookie and reads the campaign page (HTML, 200)."""
    await tapped_campaign(db, tenant, "spring")
    env = {**api_env, **cluster.api_env(database_url, "http://127.0.0.1:8081")}
    async with running(create_app(ApiConfig.from_env(env))) as api, cluster.api_client() as session:
        page = f"{api.url}/dashboard/campaigns/spring"
        assert (await cluster.timed_get(session, page, {}))[1] == 1  # not signed in yet
        assert not await cluster.sign_in_dashboard(session, api.url, "sl_wrong")
        assert await cluster.sign_in_dashboard(session, api.url, tenant.key)
        took, failed = await cluster.timed_get(session, page, {})
    assert failed == 0
    assert took > 0


async def test_a_campaign_page_shows_variants_and_rules_as_a_table_and_a_chart(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A campaign with variants and rules gets a "By variant" and a "By rule" section: a row
    per variant or rule with its clicks, and bars; a customer's URL is escaped."""
    made = await make_links(db, tenant.account_id, 2, client_identifier="ab-page")
    # As creating links with variants or rules does (these plain links stand in for them).
    await links.mark_smart(db, tenant.account_id, ["ab-page"])
    hostile = "https://e.example/<script>alert(1)</script>"
    batch = events(clicks(made[:1], smart=(hostile, 0, 0)))
    batch += events(clicks(made[1:], smart=("https://b.example/", None, 1)))
    await record(db, batch, batch_size=100)
    cookie = await sign_in(dashboard, http, tenant.key)
    _, _, html = await fetch(dashboard, http, "/dashboard/campaigns/ab-page", cookie)
    assert 'id="by-variant"' in html
    assert 'id="by-rule"' in html
    assert 'id="chart-by-variant"' in html
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "https://b.example/" in html
