"""End to end: taps on the redirect server, the forwarder, the customer's endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from forwarder.app import RECORDER
from forwarder.app import create_app as create_forwarder
from forwarder.config import ForwarderConfig
from shortlink.dev import embedded
from shortlink.redirect.app import create_app as create_redirect
from shortlink.redirect.app import make_handler
from shortlink.redirect.config import RedirectConfig
from tests.clicks import IPHONE, clicks, make_links, publish
from tests.forwarder.endpoint import Sink, set_endpoint, settled
from tests.infra import all_published, running, wait_until


async def test_first_click_is_notified_once_for_twenty_parallel_taps(
    forwarder_env: dict[str, str],
    redirect_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
) -> None:
    """Twenty simultaneous taps on one link give exactly one CLICKTHRU notification."""
    await set_endpoint(db, account_id, sink.url, format="clickthru")
    [link] = await make_links(db, account_id, 1)
    redirect = create_redirect(RedirectConfig.from_env(redirect_env))
    async with (
        running(create_forwarder(ForwarderConfig.from_env(forwarder_env))) as forwarder,
        running(redirect, make_handler) as server,
        aiohttp.ClientSession() as session,
    ):

        async def tap() -> int:
            async with session.get(
                f"{server.url}/{link.token}", headers={"User-Agent": IPHONE}, allow_redirects=False
            ) as response:
                return response.status

        assert await asyncio.gather(*(tap() for _ in range(20))) == [302] * 20
        await wait_until(lambda: len(sink.received) == 1)
        await all_published(server)
        await settled(forwarder, db, account_id, received=20)
    assert len(sink.received) == 1
    event = orjson.loads(sink.received[0].body)
    assert event["attempt"] == 1
    fields = event["event"]["fld-val-list"]
    assert (fields["previous_state"], fields["new_state"]) == ("DELIVERED", "CLICKTHRU")
    assert fields["message_id"] == link.client_ref
    assert fields["to_address"] == f"+{link.phone_number}"
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", link.id) == 20


async def test_a_preview_bot_never_triggers_the_first_click(
    forwarder_env: dict[str, str],
    redirect_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
) -> None:
    """WhatsApp's preview fetch and a HEAD request are recorded but notify nothing."""
    await set_endpoint(db, account_id, sink.url, format="clickthru")
    [link] = await make_links(db, account_id, 1)
    redirect = create_redirect(RedirectConfig.from_env(redirect_env))
    async with (
        running(create_forwarder(ForwarderConfig.from_env(forwarder_env))) as forwarder,
        running(redirect, make_handler) as server,
        aiohttp.ClientSession() as session,
    ):
        url = f"{server.url}/{link.token}"
        async with session.get(
            url, headers={"User-Agent": "WhatsApp/2.23.20.0 A"}, allow_redirects=False
        ):
            pass
        async with session.head(url, headers={"User-Agent": IPHONE}, allow_redirects=False):
            pass

        async def both_recorded() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", link.id) >= 2
            )

        await wait_until(both_recorded, within=20, what="both fetches recorded")
        await settled(forwarder, db, account_id, received=2)
        assert sink.received == []
        assert (
            await db.fetchval("SELECT clicked_at FROM first_clicks WHERE link_id = $1", link.id)
            is None
        )
        async with session.get(url, headers={"User-Agent": IPHONE}, allow_redirects=False):
            pass
        await wait_until(lambda: len(sink.received) == 1)


async def test_two_forwarders_share_the_work_and_never_overlap_on_an_endpoint(
    forwarder_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Two forwarder processes in one group deliver every click once, one request at a time."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    in_flight = 0
    most = 0
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        # Each request takes a while, so that a second one sent meanwhile would overlap it.
        await asyncio.sleep(0.05)
        received.append(await request.read())
        in_flight -= 1
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    async with TestServer(app) as endpoint:
        await set_endpoint(db, account_id, str(endpoint.make_url("/hook")))
        config = ForwarderConfig.from_env(forwarder_env)
        async with running(create_forwarder(config)), running(create_forwarder(config)):
            links = await make_links(db, account_id, 1000)
            await publish(kafka_bootstrap, click_topic, clicks(links))

            def delivered() -> int:
                return len(
                    {d["TrackingUrlId"] for b in received for d in orjson.loads(b)["ClickDetails"]}
                )

            await wait_until(lambda: delivered() == 1000, within=60)
    assert most == 1
    counts = Counter(d["TrackingUrlId"] for b in received for d in orjson.loads(b)["ClickDetails"])
    assert set(counts.values()) == {1}


async def test_a_killed_forwarder_loses_nothing_and_counts_nothing_twice(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """SIGKILL mid-stream, restart: every click recorded once, every batch delivered."""
    await set_endpoint(db, account_id, sink.url)
    links = await make_links(db, account_id, 3000)
    env = {
        **os.environ,
        **forwarder_env,
        "FORWARDER_PORT": str(embedded.free_port()),
        "CONSUME_MAX_RECORDS": "200",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "forwarder.cli", "run"], env=env, stderr=subprocess.DEVNULL
        )

    values = clicks(links)
    process = start()
    try:
        await publish(kafka_bootstrap, click_topic, values)

        async def recorded() -> int:
            return int(
                await db.fetchval("SELECT count(*) FROM clicks WHERE account_id = $1", account_id)
            )

        async def recorded_at_least(count: int) -> bool:
            return await recorded() >= count

        await wait_until(
            lambda: recorded_at_least(600), within=60, step=0.02, what="600 clicks recorded"
        )
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert await recorded() < 3000, "killed too late to prove anything"
        process = start()
        await wait_until(
            lambda: recorded_at_least(3000), within=90, step=0.2, what="every click recorded"
        )

        def delivered() -> set[int]:
            return {
                d["TrackingUrlId"]
                for r in sink.received
                for d in orjson.loads(r.body)["ClickDetails"]
            }

        await wait_until(lambda: len(delivered()) == 3000, within=60)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert (
        await db.fetchval("SELECT count(*) FROM clicks WHERE account_id = $1", account_id) == 3000
    )
    stats = await db.fetchrow(
        "SELECT total_clicks, unique_clicks FROM campaign_stats WHERE account_id = $1", account_id
    )
    assert (stats["total_clicks"], stats["unique_clicks"]) == (3000, 3000)
    # A batch sent twice (the kill came between the POST and recording its success)
    # carries the same RequestIdentifier and the same clicks both times.
    by_id: dict[str, set[bytes]] = {}
    for r in sink.received:
        by_id.setdefault(r.headers["X-Request-Identifier"], set()).add(r.body)
    assert all(len(bodies) == 1 for bodies in by_id.values())


async def test_a_tap_through_a_trusted_proxy_is_placed_by_its_client_ip(
    forwarder_env: dict[str, str],
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    city_database: Path,
) -> None:
    """Behind a trusted proxy the X-Forwarded-For address is the one placed: GEOIP_DATABASE
    gives country and region; a direct tap from the loopback is placed nowhere."""
    [link] = await make_links(db, account_id, 1)
    proxied = create_redirect(
        RedirectConfig.from_env({**redirect_env, "TRUSTED_PROXIES": "127.0.0.0/8"})
    )
    direct = create_redirect(RedirectConfig.from_env(redirect_env))
    env = {**forwarder_env, "GEOIP_DATABASE": str(city_database)}
    async with (
        running(create_forwarder(ForwarderConfig.from_env(env))),
        running(proxied, make_handler) as behind_proxy,
        running(direct, make_handler) as server,
        aiohttp.ClientSession() as session,
    ):
        for url, headers in (
            (behind_proxy.url, {"X-Forwarded-For": "145.97.39.155"}),
            (server.url, {"X-Forwarded-For": "145.97.39.155"}),  # not trusted: ignored
        ):
            async with session.get(
                f"{url}/{link.token}",
                headers={"User-Agent": IPHONE, **headers},
                allow_redirects=False,
            ) as response:
                assert response.status == 302

        async def both_recorded() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", link.id) >= 2
            )

        await wait_until(both_recorded, within=20, what="both taps recorded")
    rows = await db.fetch(
        "SELECT host(client_ip) AS ip, country, region FROM clicks WHERE link_id = $1 ORDER BY 1",
        link.id,
    )
    assert [tuple(r.values()) for r in rows] == [
        ("127.0.0.1", None, None),
        ("145.97.39.155", "NL", "North Holland"),
    ]


async def test_a_trickle_of_clicks_is_recorded_in_few_transactions(
    forwarder_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """With CONSUME_LINGER_MS the broker holds each fetch: 30 clicks arriving over about a
    second are recorded in a few transactions, not one or two clicks at a time."""
    links = await make_links(db, account_id, 30)
    app = create_forwarder(ForwarderConfig.from_env({**forwarder_env, "CONSUME_LINGER_MS": "600"}))
    async with running(app):
        recorder = app[RECORDER]
        await wait_until(lambda: recorder.partitions(), within=60, what="partitions assigned")
        for value in clicks(links):
            await publish(kafka_bootstrap, click_topic, [value])
            await asyncio.sleep(0.03)

        async def all_recorded() -> bool:
            count = await db.fetchval(
                "SELECT count(*) FROM clicks WHERE account_id = $1", account_id
            )
            return bool(count == 30)

        await wait_until(all_recorded, within=30, what="30 clicks recorded")
    assert recorder.totals.recorded == 30
    # Without the linger (CONSUME_LINGER_MS=1) this was 30 transactions.
    assert recorder.batches <= 5, f"{recorder.batches} transactions for 30 clicks"
