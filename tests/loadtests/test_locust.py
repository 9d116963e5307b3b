"""The locustfile and its seeding step, run for a few seconds against real servers."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import asyncpg

from loadtests import seed
from loadtests.load import read_stats
from loadtests.shape import burst_users
from shortlink import accounts, clickevent
from shortlink.api.app import create_app as create_api
from shortlink.api.config import ApiConfig
from tests.infra import RunningServer, all_published, consume, running

ROOT = Path(__file__).resolve().parents[2]


def test_burst_starts_at_the_peak_and_tails_off_to_a_tenth() -> None:
    """Most recipients tap right after the send; by the end a tenth are still tapping."""
    counts = [burst_users(t, 40, 60) for t in range(0, 61, 5)]
    assert counts[0] == 40
    assert counts[-1] == 4
    assert counts == sorted(counts, reverse=True)


async def test_smoke_run_against_redirect_server_and_api(
    redirect_server: RunningServer,
    database_url: str,
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    click_topic: str,
    tmp_path: Path,
) -> None:
    """A seeded 5-second burst: every tap, preview, unknown and expired token answers as
    expected, the operator's bulk calls succeed, and every 302 became a click event."""
    api_config = ApiConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "SHORT_DOMAIN": f"127.0.0.1:{redirect_server.port}",
            "SHORT_URL_SCHEME": "http",
            "DATABASE_POOL_SIZE": "4",
        }
    )
    account = await accounts.create_account(db, "locust-smoke")
    async with running(create_api(api_config)) as api:
        campaign = await seed.create_campaign(api.url, account.api_key, 300, expired=5)
        assert len(campaign.short_urls) == 300
        assert all(u.startswith(redirect_server.url) for u in campaign.short_urls)
        campaign_file = tmp_path / "campaign.json"
        campaign.dump(campaign_file)
        prefix = tmp_path / "smoke"
        locust = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "--run-time",
            "15s",
            "--csv",
            str(prefix),
            "--only-summary",
            env={
                **os.environ,
                "LOAD_CAMPAIGN_FILE": str(campaign_file),
                "SHORTLINK_API_URL": api.url,
                "SHORTLINK_API_KEY": account.api_key,
                "LOAD_RUN_SECONDS": "5",
                "LOAD_PEAK_USERS": "20",
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(locust.wait(), 60) == 0
    stats = read_stats(prefix)
    assert stats["tap"]["requests"] > 50
    assert stats["preview (HEAD)"]["requests"] > 0
    unknown = stats.get("unknown token", {}).get("requests", 0)
    expired = stats.get("expired link", {}).get("requests", 0)
    assert unknown + expired > 0
    operator = [name for name in stats if name.startswith(("POST /v1/links", "POST /v1/messages"))]
    assert sum(stats[name]["requests"] for name in operator) >= 1
    assert all(row["failures"] == 0 for row in stats.values()), stats
    counted = {
        "GET": int(stats["tap"]["requests"]),
        "HEAD": int(stats["preview (HEAD)"]["requests"]),
    }
    await all_published(redirect_server)
    records = await consume(kafka_bootstrap, click_topic, sum(counted.values()), to_end=True)
    methods = Counter(clickevent.decode(r.value).method for r in records)
    assert set(methods) == {"GET", "HEAD"}
    # Every answered request is one event. Locust cannot count a request whose user
    # it stopped while the answer was on its way (the burst stops users as it decays),
    # so there may be a few more events, at most one per stopped user.
    assert all(methods[m] >= counted[m] for m in counted), (methods, counted)
    assert sum(methods.values()) - sum(counted.values()) <= 20, (methods, counted)
