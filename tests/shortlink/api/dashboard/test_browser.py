"""The dashboard in a real browser: headless Chromium signs in, reads charts and tables,
downloads a CSV file; the API docs render; no page breaks its Content-Security-Policy."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import asyncpg
from playwright.async_api import BrowserContext, ConsoleMessage, Dialog, Page, expect

from forwarder.recorder import record
from shortlink import accounts, domains
from tests.clicks import clicks
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Tenant, new_tenant
from tests.shortlink.api.dashboard.conftest import events, tapped_campaign

XSS = "<img src=x onerror=alert(1)>"


class Watch:
    """What a page said that it should not: CSP violations, errors, dialogs."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(f"console {message.type}: {message.text}")

    async def _dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()  # a dialog left open would block the page


async def sign_in(page: Page, server: RunningServer, key: str) -> None:
    await page.goto(f"{server.url}/dashboard/campaigns")
    await page.wait_for_url(re.compile(r"/dashboard/signin\?next="))
    await page.fill("#api_key", key)
    await page.click("#signin button[type=submit]")
    await page.wait_for_url("**/dashboard/campaigns")


def minute_of(ms: int) -> int:
    return ms // 60_000 * 60


async def test_sign_in_chart_table_and_csv(
    dashboard: RunningServer,
    context: BrowserContext,
    db: asyncpg.Connection,
    tenant: Tenant,
    tmp_path: Path,
) -> None:
    """Signed in with a key, the campaign page charts the taps per minute, lists the
    recipients, and its button downloads the clicks as CSV."""
    campaign = await tapped_campaign(db, tenant, "spring")
    page = await context.new_page()
    watch = Watch(page)
    await sign_in(page, dashboard, tenant.key)
    assert await page.inner_text("#campaigns tbody td.name") == "spring"
    await page.click("#campaigns tbody td.name a")
    await page.wait_for_url("**/dashboard/campaigns/spring")
    await page.wait_for_selector("html[data-charts-ready=true]")

    columns = await page.evaluate("shortlinkCharts['chart-minutes'].data")
    created = campaign.links[0].created_at_ms
    expected: dict[int, list[int]] = {}  # minute -> [taps, first taps, bot taps]
    for offset, values in ((90_000, (3, 3, 0)), (95_000, (0, 0, 1)), (200_000, (1, 0, 0))):
        point = expected.setdefault(minute_of(created + offset), [0, 0, 0])
        for i, value in enumerate(values):
            point[i] += value
    drawn = {
        int(at): [taps, firsts, bots]
        for at, taps, firsts, bots in zip(*columns, strict=True)
        if taps or firsts or bots
    }
    assert drawn == expected
    assert columns[0][0] == minute_of(created)
    assert await page.get_attribute("#chart-minutes", "data-points") == str(len(columns[0]))
    assert await page.locator("#chart-minutes canvas").count() == 1

    rows = await page.locator("#recipients tbody tr").all_inner_texts()
    assert len(rows) == 6
    first = [cell.strip() for cell in rows[0].split("\t")]
    assert first[0] == campaign.links[0].phone_number
    assert first[1] == campaign.links[0].client_ref
    assert first[3:] == ["2", "mobile", "iOS"]
    untapped = [cell.strip() for cell in rows[5].split("\t")]
    assert untapped[2:4] == ["-", "0"]
    assert await page.inner_text("#fig-total") == "4"
    assert await page.inner_text("#fig-unique") == "3"
    assert await page.inner_text("#fig-bots") == "1"

    async with page.expect_download() as info:
        await page.click("#clicks-csv")
    download = await info.value
    target = tmp_path / "clicks.csv"
    await download.save_as(target)
    table = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert len(table) == 5
    assert sorted(row["is_bot"] for row in table) == ["false"] * 4 + ["true"]
    assert {row["phone_number"] for row in table} == {
        link.phone_number for link in campaign.links[:4]
    }
    assert watch.problems == []


async def test_campaign_name_renders_as_text(
    dashboard: RunningServer, context: BrowserContext, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A campaign named like an HTML tag shows as those characters and runs nothing."""
    await tapped_campaign(db, tenant, XSS)
    page = await context.new_page()
    watch = Watch(page)
    await sign_in(page, dashboard, tenant.key)
    assert await page.inner_text("#campaigns tbody td.name") == XSS
    assert await page.locator("#campaigns img").count() == 0
    await page.click("#campaigns tbody td.name a")
    await page.wait_for_selector("html[data-charts-ready=true]")
    assert await page.inner_text("#campaign-name") == XSS
    assert await page.locator("main img").count() == 0
    assert await page.title() == f"{XSS} · shortlink"
    assert watch.problems == []


async def test_live_campaign_page_refreshes_itself(
    dashboard_env: dict[str, str],
    context: BrowserContext,
    db: asyncpg.Connection,
    tenant: Tenant,
) -> None:
    """A campaign tapped in the last hour reloads its page on its own and shows new taps."""
    from shortlink.api.app import create_app
    from shortlink.api.config import ApiConfig
    from tests.infra import running

    env = {**dashboard_env, "DASHBOARD_REFRESH_SECONDS": "1"}
    async with running(create_app(ApiConfig.from_env(env))) as server:
        campaign = await tapped_campaign(db, tenant, "live", at=time.time() - 300)
        page = await context.new_page()
        await sign_in(page, server, tenant.key)
        await page.goto(f"{server.url}/dashboard/campaigns/live")
        assert await page.get_attribute("body", "data-refresh-seconds") == "1"
        assert await page.inner_text("#fig-total") == "4"
        await record(db, events(clicks(campaign.links[4:6])), batch_size=100)
        # The page's own timer reloads it; the CSP forbids eval, so no wait_for_function.
        await expect(page.locator("#fig-total")).to_have_text("6", timeout=15_000)


async def test_quiet_campaign_page_does_not_refresh(
    dashboard: RunningServer, context: BrowserContext, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A campaign with no tap in the last hour carries no refresh."""
    await tapped_campaign(db, tenant, "old", at=time.time() - 3 * 3600)
    page = await context.new_page()
    await sign_in(page, dashboard, tenant.key)
    await page.goto(f"{dashboard.url}/dashboard/campaigns/old")
    assert await page.get_attribute("body", "data-refresh-seconds") is None
    assert await page.locator("#live").count() == 0


async def test_api_docs_render_offline(dashboard: RunningServer, context: BrowserContext) -> None:
    """/v1/docs draws the OpenAPI document with the vendored Swagger UI, within the CSP."""
    page = await context.new_page()
    watch = Watch(page)
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(dashboard.url) else outside.append(request.url)
        ),
    )
    await page.goto(f"{dashboard.url}/v1/docs")
    title = page.locator(".swagger-ui .info .title")
    await title.wait_for()
    assert "shortlink" in (await title.inner_text()).lower()
    description = await page.locator(".swagger-ui .info .description").inner_text()
    assert "Authorization: Bearer <api key>" in description  # not swallowed as HTML
    await page.locator(".opblock-summary-path", has_text="/v1/campaigns").first.wait_for()
    assert outside == []
    assert watch.problems == []


async def test_other_accounts_campaign_is_not_found(
    dashboard: RunningServer, context: BrowserContext, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Signed in as one account, another account's campaign page is a 404."""
    other = await new_tenant(db)
    await tapped_campaign(db, other, "theirs")
    page = await context.new_page()
    await sign_in(page, dashboard, tenant.key)
    response = await page.goto(f"{dashboard.url}/dashboard/campaigns/theirs")
    assert response is not None
    assert response.status == 404
    assert await page.inner_text("h1") == "No such campaign"
    await page.goto(f"{dashboard.url}/dashboard/campaigns")
    assert await page.locator("#campaigns tbody td.name").count() == 0


async def test_keys_page_makes_a_key_shows_it_once_and_revokes_it(
    dashboard: RunningServer, context: BrowserContext, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """In Chromium: the keys page's form makes a scoped key and shows its secret once; the
    key works; its Revoke button stops it; the audit page lists both; no CSP complaint."""
    page = await context.new_page()
    watch = Watch(page)
    await sign_in(page, dashboard, tenant.key)
    await page.click("nav.sections a[href='/dashboard/keys']")
    await page.wait_for_url("**/dashboard/keys")
    await page.fill("#name", "analysts")
    await page.check("input[name=scopes][value='stats:read']")
    await page.fill("#expires_in_days", "7")
    await page.click("#newkey button[type=submit]")
    await expect(page.locator("#secret")).to_have_text(re.compile(r"^sl_[A-Za-z0-9_-]{43}$"))
    secret = await page.inner_text("#secret")
    assert await accounts.authenticate(db, secret) == tenant.account_id
    row = page.locator("#keys tbody tr", has_text="analysts")
    await expect(row).to_contain_text("stats:read")
    await row.locator("button", has_text="Revoke").click()
    await page.wait_for_url("**/dashboard/keys")
    await expect(page.locator("#keys tbody tr", has_text="analysts")).to_have_count(0)
    assert await accounts.authenticate(db, secret) is None
    await page.click("nav.sections a[href='/dashboard/audit']")
    await page.wait_for_url("**/dashboard/audit")
    await expect(page.locator("#audit tbody tr")).to_have_count(2)
    assert secret not in await page.content()
    assert watch.problems == []


async def test_domains_page_shows_each_domain_and_its_txt_record(
    dashboard: RunningServer, context: BrowserContext, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """In Chromium: the Domains link leads to the account's domains, each with its state and
    the TXT record to add; no CSP complaint."""
    name = f"web{tenant.account_id}.brand.example"
    added = await domains.add(db, tenant.account_id, name)
    page = await context.new_page()
    watch = Watch(page)
    await sign_in(page, dashboard, tenant.key)
    await page.click("nav.sections a[href='/dashboard/domains']")
    await page.wait_for_url("**/dashboard/domains")
    row = page.locator("#domains tbody tr", has_text=name)
    await expect(row).to_contain_text("waiting for the TXT record")
    await expect(row).to_contain_text(f"_shortlink-challenge.{name}")
    await expect(row).to_contain_text(added["verification"])
    assert watch.problems == []
