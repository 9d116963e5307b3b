"""Dashboard fixtures: the API with the dashboard on, campaigns with recorded taps, a browser."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from forwarder.recorder import record
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from shortlink.links import LinkEntry
from tests.clicks import clicks, events, make_links
from tests.infra import RunningServer, running
from tests.shortlink.api.conftest import Tenant

SECRET = "test-dashboard-secret-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
# As the project's notes say: without the background-networking flags Chromium
# floods the closed network; Playwright adds --headless and a fresh profile.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)


@pytest.fixture
def dashboard_env(api_env: dict[str, str]) -> dict[str, str]:
    return {
        **api_env,
        "DASHBOARD_ENABLED": "true",
        "DASHBOARD_SECRET": SECRET,
        "SHORT_URL_SCHEME": "http",
    }


@pytest.fixture
async def dashboard(dashboard_env: dict[str, str]) -> AsyncIterator[RunningServer]:
    """The API with the dashboard on, on a free port."""
    async with running(create_app(ApiConfig.from_env(dashboard_env))) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that follows no redirects and keeps no cookies unless told."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@dataclass
class Campaign:
    name: str
    links: list[LinkEntry]


async def tapped_campaign(
    db: asyncpg.Connection, tenant: Tenant, name: str, *, links: int = 6, at: float | None = None
) -> Campaign:
    """A campaign of `links` links: the first three tapped by people (the first twice,
    once from Android), the fourth by a preview bot, minutes after the links were made."""
    made = await make_links(db, tenant.account_id, links, client_identifier=name)
    start = made[0].created_at_ms / 1000 if at is None else at
    batch = events(clicks(made[:3], at=start + 90))
    batch += events(clicks(made[:1], at=start + 200, user_agent=ANDROID))
    batch += events(clicks(made[3:4], at=start + 95, user_agent="WhatsApp/2.23.20.0 A"))
    await record(db, batch, batch_size=100)
    return Campaign(name, made)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package, driven by Playwright."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (no cookies) that accepts downloads."""
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        await context.close()
