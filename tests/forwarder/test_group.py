"""Forwarders in one consumer group: one that stops leaves at once, one that dies is
replaced by the others, one that restarts consumes again; no click lost or counted twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from forwarder.app import RECORDER
from forwarder.app import create_app as create_forwarder
from forwarder.config import ForwarderConfig
from shortlink.dev import embedded
from tests.clicks import clicks, make_links, publish
from tests.forwarder.endpoint import Sink, set_endpoint
from tests.infra import metric_samples, running, wait_until

PARTITIONS = 3  # of the test's click topic (tests/conftest.py click_topic)


@contextlib.contextmanager
def forwarder_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A `forwarder run` process with `env`, killed on the way out if still running."""
    child = subprocess.Popen(
        [sys.executable, "-m", "forwarder.cli", "run"],
        env={**os.environ, **env},
        stderr=subprocess.DEVNULL,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


async def partitions_of(url: str) -> int:
    """The forwarder_partitions gauge of a forwarder's /metrics (0 before it consumes)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r,
        ):
            samples = metric_samples(await r.text())
    except aiohttp.ClientError:
        return 0
    return int(samples.get(("forwarder_partitions", ()), 0))


async def group_members(bootstrap: str, group: str) -> int:
    """How many members the broker counts in the consumer group now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [found] = description.to_object()["groups"]
    return len(found["members"])


async def test_a_stopping_forwarder_leaves_the_group_at_once(
    forwarder_env: dict[str, str], kafka_bootstrap: str
) -> None:
    """A forwarder that stops sends LeaveGroup: the broker drops it from the group at once,
    not after the (here 12 s) session timeout."""
    env = {**forwarder_env, "KAFKA_SESSION_TIMEOUT_MS": "12000"}
    config = ForwarderConfig.from_env(env)
    group = config.group_id
    async with running(create_forwarder(config)) as staying:
        recorder = staying.app[RECORDER]
        async with running(create_forwarder(config)) as leaving:
            other = leaving.app[RECORDER]
            await wait_until(
                lambda: recorder.partitions() and other.partitions(),
                within=60,
                what="both forwarders consume",
            )
            assert await group_members(kafka_bootstrap, group) == 2
        assert await group_members(kafka_bootstrap, group) == 1
        await wait_until(
            lambda: recorder.partitions() == PARTITIONS, within=60, what="the other took all"
        )


@pytest.mark.parametrize(
    "session_ms",
    ["6000", str(embedded.TANSU_SESSION_TIMEOUT_MS)],
    ids=["default-session", "local-broker-session"],
)
async def test_a_killed_forwarder_s_partitions_go_to_the_other_and_nothing_is_lost(
    session_ms: str,
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Clicks flow to two forwarder processes; one is SIGKILLed: the other takes its
    partitions, the killed one started again consumes again, and every click is recorded
    and delivered once (a batch sent twice keeps its RequestIdentifier); with the default
    session and with the short one `make run` uses on tansu."""
    await set_endpoint(db, account_id, sink.url)
    links = await make_links(db, account_id, 1500)
    values = clicks(links)
    ports = [embedded.free_port(), embedded.free_port()]
    envs = [
        {
            **forwarder_env,
            "FORWARDER_PORT": str(port),
            "CONSUME_MAX_RECORDS": "50",
            "KAFKA_SESSION_TIMEOUT_MS": session_ms,
        }
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    async def recorded() -> int:
        return int(
            await db.fetchval("SELECT count(*) FROM clicks WHERE account_id = $1", account_id)
        )

    async def recorded_at_least(count: int) -> bool:
        return await recorded() >= count

    async def feed(chunks: list[list[tuple[str, bytes]]]) -> None:
        for chunk in chunks:
            await publish(kafka_bootstrap, click_topic, chunk)
            await asyncio.sleep(0.2)

    with forwarder_process(envs[0]) as survivor, forwarder_process(envs[1]) as victim:
        for url in urls:
            await wait_until(lambda url=url: partitions_of(url), within=60, what=f"{url} consumes")
        # Clicks go on flowing while the victim dies and the survivor takes over.
        flowing = asyncio.create_task(feed([values[i : i + 50] for i in range(0, 1500, 50)]))
        try:
            await wait_until(lambda: recorded_at_least(200), within=60, what="200 clicks recorded")
            victim.send_signal(signal.SIGKILL)
            victim.wait()

            async def survivor_owns_all() -> bool:
                return await partitions_of(urls[0]) == PARTITIONS

            await wait_until(survivor_owns_all, within=60, what="the survivor owns every partition")
            assert survivor.poll() is None
            with forwarder_process(envs[1]):
                await wait_until(
                    lambda: partitions_of(urls[1]), within=60, what="the restarted one consumes"
                )
                await flowing
                await wait_until(
                    lambda: recorded_at_least(1500), within=60, what="every click recorded"
                )

                def delivered() -> set[int]:
                    return {
                        d["TrackingUrlId"]
                        for r in sink.received
                        for d in orjson.loads(r.body)["ClickDetails"]
                    }

                await wait_until(lambda: len(delivered()) == 1500, within=60)
        finally:
            flowing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flowing
    assert await recorded() == 1500
    stats = await db.fetchrow(
        "SELECT total_clicks, unique_clicks FROM campaign_stats WHERE account_id = $1", account_id
    )
    assert (stats["total_clicks"], stats["unique_clicks"]) == (1500, 1500)
    by_id: dict[str, set[bytes]] = {}
    for r in sink.received:
        by_id.setdefault(r.headers["X-Request-Identifier"], set()).add(r.body)
    assert all(len(bodies) == 1 for bodies in by_id.values())
