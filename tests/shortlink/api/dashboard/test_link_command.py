"""`shortlink dashboard-link`: prints a URL that signs the account in, read-only."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest

from shortlink.cli import main
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Tenant
from tests.shortlink.api.dashboard.conftest import SECRET, tapped_campaign
from tests.shortlink.api.dashboard.test_sessions import COOKIE


async def test_printed_link_opens_the_campaign(
    dashboard: RunningServer,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command's URL opens the campaign's page, until rotate-key revokes its key."""
    await tapped_campaign(db, tenant, "shared")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DASHBOARD_SECRET", SECRET)
    monkeypatch.setenv("DASHBOARD_PUBLIC_URL", dashboard.url)
    argv = ["dashboard-link", "--account", str(tenant.account_id), "--campaign", "shared"]
    assert await asyncio.to_thread(main, [*argv, "--hours", "2"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith(f"{dashboard.url}/dashboard/link/")
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard/campaigns/shared"
        assert COOKIE in response.cookies
    assert await asyncio.to_thread(main, [*argv[:3], "--campaign", "nope"]) == 1
    rotate = ["account", "rotate-key", "--account", str(tenant.account_id)]
    assert await asyncio.to_thread(main, rotate) == 0
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 403  # the key it was made under is revoked
    assert await asyncio.to_thread(main, [*argv, "--hours", "0"]) == 2
    monkeypatch.delenv("DASHBOARD_SECRET")
    assert await asyncio.to_thread(main, argv) == 78
