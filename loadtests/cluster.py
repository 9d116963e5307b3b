"""`make cluster` / `make cluster-chaos`: the system on several hosts of this machine.

Hosts are network namespaces on one switch (loadtests/netns.py, root needed):
pg-monitor, pg1 and pg2 (PostgreSQL 15 as a primary and a streaming replica under
pg_auto_failover: loadtests/failover.py), broker (tansu), redirect1 and redirect2
(`shortlink redirect`, one worker each), forwarder1 and forwarder2 (one consumer
group), sink (the contract-checking customer endpoint, and `shortlink api` with
DATABASE_READ_URL on the replica) and load (wrk). Every service reaches PostgreSQL
through the multi-host URL with `target_session_attrs=read-write`, so a failover
needs no reconfiguration. Paced taps (wrk on the load host, half through each
redirect host) run for each window:

- `make cluster`: one steady window;
- `make cluster-chaos`: one window per fault, each starting from a quiet system:
  the PostgreSQL primary's host cut off (link down) until the replica is promoted
  and then back (it must rejoin as a replica); a forwarder host killed (SIGKILL of
  everything in it); a redirect host cut from the broker for 30 s (its clicks
  spool and are replayed); a redirect host killed and started again.

For each window: taps answered 302 = clicks recorded = clicks delivered (deliveries
the sink saw twice counted apart), 5xx and unanswered taps, how long recording
stalled, each redirect host's p99, and the API's campaign statistics (read on the
replica) at their slowest. Everything it starts it stops, and the namespaces go, on
exit, Ctrl-C or failure. The report goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

from shortlink import accounts, schema
from shortlink.dev import embedded
from shortlink.endpoints import set_endpoint
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links

from .bench_system import RANDOM_TAPS
from .failover import Failover, installed
from .machine import process
from .netns import Network
from .results import RESULTS_DOC, ROOT, write_section
from .system import warm_everywhere
from .taps import NO_ANSWER, Tally, start_wrk, wrk_script

ANY = "0.0.0.0"  # noqa: S104 - each host is a namespace of its own, on the cluster's network
HOSTS = [
    "pg-monitor",
    "pg1",
    "pg2",
    "broker",
    "redirect1",
    "redirect2",
    "forwarder1",
    "forwarder2",
    "sink",
    "load",
]
REDIRECTS = ("redirect1", "redirect2")
FORWARDERS = ("forwarder1", "forwarder2")
TOPIC = "clicks"
PARTITIONS = 6
LINKS = 2_000


@dataclass
class Cluster:
    """The running hosts, and how to (re)start their services."""

    net: Network
    work: Path
    db: Failover
    stack: contextlib.ExitStack
    api_key: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def url(self, host: str, port: int) -> str:
        return f"http://{self.net.hosts[host]}:{port}"

    def start(self, host: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """A service on `host`, stopped with the cluster (or killed with its host)."""
        self.stack.enter_context(
            process(
                [*self.net.exec(host), sys.executable, "-m", *argv],
                {**self.env, **(env or {})},
                self.work / f"{host}.log",
            )
        )

    def start_redirect(self, host: str) -> None:
        env = {"SPOOL_DIR": str(self.work / f"spool-{host}"), "TRUSTED_PROXIES": ""}
        self.start(host, ["shortlink.cli", "redirect", "--workers", "1", "--host", ANY], env)

    def start_forwarder(self, host: str) -> None:
        self.start(host, ["forwarder.cli", "run", "--host", ANY])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chaos", action="store_true", help="the fault windows")
    parser.add_argument("--rate", type=int, default=200, help="taps/s over both redirect hosts")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument(
        "--fault",
        action="append",
        choices=[name for name, _, _ in FAULTS],
        help="with --chaos, only this fault's window (repeatable)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.stderr.write("make cluster needs root (ip netns)\n")
        return 2
    missing = installed()
    if missing:
        sys.stderr.write(f"{missing}\n")
        return 2
    signal.signal(signal.SIGTERM, _interrupted)  # stopped like a Ctrl-C: everything unwinds
    try:
        windows = run(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; everything started was stopped\n")
        return 130
    report, passed = render(windows, args)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0 if passed else 1


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> list[Window]:
    net = Network()
    with contextlib.ExitStack() as stack:
        stack.callback(net.remove)  # last: whatever still runs in a namespace dies with it
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-cluster-")))
        os.chmod(work, 0o755)  # noqa: S103 - the postgres user reaches its folders through it
        print("making the hosts ...", flush=True)
        net.create(HOSTS)
        db = Failover(net, work)
        stack.callback(db.stop)
        print("PostgreSQL primary and replica under pg_auto_failover ...", flush=True)
        db.start()
        cluster = Cluster(net, work, db, stack)
        start_services(cluster)
        return asyncio.run(exercise(cluster, args))
    raise AssertionError("unreachable")


def start_services(cluster: Cluster) -> None:
    net, work = cluster.net, cluster.work
    broker = f"{net.hosts['broker']}:9092"
    url = f"tcp://{broker}"
    cluster.stack.enter_context(
        process(
            [
                *net.exec("broker"),
                embedded.tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            None,
            work / "broker.log",
        )
    )
    asyncio.run(_wait_port(net.hosts["broker"], 9092))
    asyncio.run(ensure_topic(broker, TOPIC, PARTITIONS))
    sink_url = cluster.url("sink", 8090)
    cluster.env = {
        **os.environ,
        "DATABASE_URL": cluster.db.url,
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "CLICK_TOPIC": TOPIC,
        "FORWARDER_GROUP": "cluster",
        "KAFKA_SESSION_TIMEOUT_MS": str(embedded.TANSU_SESSION_TIMEOUT_MS),
        "ALLOW_PRIVATE_ENDPOINTS": "true",
        "SHORTLINK_DATA_DIR": str(work / "data"),
        "METRICS_HOST": ANY,
        "LOG_LEVEL": "INFO",
        "DATABASE_POOL_SIZE": "4",
    }
    cluster.start("sink", ["loadtests.sink", "--host", ANY, "--port", "8090"])
    print(f"seeding {LINKS:,} links ...", flush=True)
    cluster.api_key, tokens = asyncio.run(seed(cluster.db.url, f"{sink_url}/hook"))
    (work / "tokens.txt").write_text("\n".join(tokens) + "\n")
    for host in REDIRECTS:
        cluster.start_redirect(host)
    for host in FORWARDERS:
        cluster.start_forwarder(host)
    cluster.start(
        "sink",
        ["shortlink.cli", "api", "--workers", "1", "--host", ANY],
        api_env(cluster.db.read_url, cluster.url("sink", 8081)),
    )
    for host, port in [*((h, 8080) for h in REDIRECTS), *((h, 8082) for h in FORWARDERS)]:
        asyncio.run(_wait_ready(f"{cluster.url(host, port)}/readyz", 60))
    asyncio.run(_wait_ready(f"{cluster.url('sink', 8081)}/readyz", 60))
    print("warming both redirect hosts ...", flush=True)
    for host in REDIRECTS:
        asyncio.run(
            warm_everywhere(
                cluster.url(host, 8080), f"{cluster.url(host, 9101)}/metrics", tokens[:1000]
            )
        )


def api_env(read_url: str, public_url: str) -> dict[str, str]:
    """The API's own settings (beside Cluster.env): statistics and dashboard read on the
    replica, the dashboard at `public_url`. The cluster speaks plain http, so the session
    cookie must not be Secure: a client sends a Secure cookie to https URLs only, and
    every poll of the campaign page would be sent to sign in."""
    return {
        "DATABASE_READ_URL": read_url,
        "SHORT_DOMAIN": "cluster.example",
        "API_METRICS_PORT": "0",
        "DASHBOARD_ENABLED": "1",
        "DASHBOARD_SECRET": secrets.token_urlsafe(32),
        "DASHBOARD_PUBLIC_URL": public_url,
        "DASHBOARD_COOKIE_SECURE": "false",
    }


def api_client() -> aiohttp.ClientSession:
    """The sampler's client of the API: 5 s a request, and it keeps the dashboard's cookie."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=5),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # the API's host is an address
    )


async def seed(database_url: str, hook: str) -> tuple[str, list[str]]:
    """The bench account (its endpoint the sink, JSON, every click) and its links."""
    conn = await asyncpg.connect(database_url)
    try:
        await schema.migrate(conn)
        account = await accounts.create_account(conn, "bench")
        await set_endpoint(
            conn,
            account.account_id,
            url=hook,
            format="json",
            mode="every",
            secret=None,
            enabled=True,
            allow_private=True,
        )
        created = await create_links(
            conn,
            account.account_id,
            [
                NewLink(
                    f"https://shop.example.com/offer?r={i}",
                    phone_number=f"4477{i:08d}",
                    client_ref=f"msg-{i}",
                    client_identifier="bench",
                )
                for i in range(LINKS)
            ],
        )
    finally:
        await conn.close()
    return account.api_key, [c.token for c in created]


async def _wait_port(host: str, port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing listens on {host}:{port}")


async def _wait_ready(url: str, within: float) -> float | None:
    """Seconds until `url` answers 200, or None if it did not within `within`."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() - started < within:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            await asyncio.sleep(0.2)
    return None


@dataclass
class Window:
    """One window of taps, its fault and what was measured."""

    name: str
    note: str = ""
    answered: dict[int, int] = field(default_factory=dict)  # status -> taps
    p99_ms: dict[str, float] = field(default_factory=dict)  # redirect host -> p99
    recorded: int = 0
    delivered: int = 0
    delivered_twice: int = 0
    stall: float = 0.0  # longest time no click was recorded while taps flowed
    stats_slowest_ms: float = 0.0  # the API's campaign statistics, slowest answer
    stats_failed: int = 0
    page_slowest_ms: float = 0.0  # the dashboard's campaign page (HTML), slowest answer
    page_failed: int = 0

    @property
    def ok(self) -> int:
        return self.answered.get(302, 0)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.answered.items() if status >= 500)


Fault = Callable[[Cluster], Awaitable[str]]


async def primary_cut_off(cluster: Cluster) -> str:
    """Cut the primary's host off until the replica is promoted, then bring it back and
    wait until it is a replica again."""
    db = cluster.db
    states = await asyncio.to_thread(db.states)
    primary = next(n for n, s in states.items() if s.startswith("primary"))
    replica = "pg2" if primary == "pg1" else "pg1"
    began = time.monotonic()
    cluster.net.cut(primary)
    promoted = await _until(
        lambda: db.states().get(replica, "").split("/")[0] in ("wait_primary", "primary"), 120
    )
    await asyncio.sleep(5)
    cluster.net.restore(primary)
    back = time.monotonic()
    rejoined = await _until(lambda: db.states().get(primary) == "secondary/secondary", 180)
    return (
        f"{primary} cut off; {replica} promoted after {promoted - began:.0f} s; {primary} back "
        f"{back - began:.0f} s in, a replica again {rejoined - back:.0f} s later"
    )


async def forwarder_killed(cluster: Cluster) -> str:
    killed = cluster.net.kill("forwarder1")
    survivor = f"{cluster.url('forwarder2', 8082)}/metrics"
    began = time.monotonic()
    took = await _until(lambda: _metric(survivor, "forwarder_partitions") == PARTITIONS, 120)
    return (
        f"forwarder1: {killed} processes SIGKILLed; forwarder2 consumed all {PARTITIONS} "
        f"partitions {took - began:.1f} s later"
    )


async def broker_lost(cluster: Cluster) -> str:
    cluster.net.blackhole("redirect1", "broker")
    await asyncio.sleep(30)
    cluster.net.unblackhole("redirect1", "broker")
    return "redirect1 could not reach the broker for 30 s (blackhole route)"


async def redirect_killed(cluster: Cluster) -> str:
    killed = cluster.net.kill("redirect2")
    cluster.start_redirect("redirect2")
    ready = await _wait_ready(f"{cluster.url('redirect2', 8080)}/readyz", 60)
    took = "not ready within 60 s" if ready is None else f"ready {ready:.1f} s later"
    return f"redirect2: {killed} processes SIGKILLed and started again, {took}"


FAULTS: list[tuple[str, Fault, int]] = [  # name, fault, window seconds
    ("PostgreSQL primary cut off", primary_cut_off, 100),
    ("forwarder host killed", forwarder_killed, 45),
    ("redirect host loses the broker 30 s", broker_lost, 55),
    ("redirect host killed and restarted", redirect_killed, 40),
]
FAULT_AT = 10  # seconds into a window


async def _until(condition: Callable[[], object], within: float) -> float:
    """The monotonic time `condition` (run in a thread) first held."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return time.monotonic()
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not within {within:.0f} s: {condition}")


def _metric(url: str, name: str) -> float | None:
    from .machine import metric

    try:
        return metric(url, name)
    except OSError:
        return None


async def exercise(cluster: Cluster, args: argparse.Namespace) -> list[Window]:
    faults: list[tuple[str, Fault | None, int]] = [
        (name, fault, seconds)
        for name, fault, seconds in FAULTS
        if not args.fault or name in args.fault
    ]
    if not args.chaos:
        faults = [("steady", None, 30)]
    windows = []
    for name, fault, seconds in faults:
        print(f"window: {name} ({seconds} s of taps)", flush=True)
        window = await one_window(cluster, name, fault, seconds, args.rate)
        print(f"  {window}", flush=True)
        windows.append(window)
        if name == "forwarder host killed":
            cluster.start_forwarder("forwarder1")
            await _wait_ready(f"{cluster.url('forwarder1', 8082)}/readyz", 60)
    return windows


async def one_window(
    cluster: Cluster, name: str, fault: Fault | None, seconds: int, rate: int
) -> Window:
    window = Window(name)
    work = cluster.work
    await _settle(cluster)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{cluster.url('sink', 8090)}/reset"):
            pass
    # wrk taps from its start; the settled system has recorded nothing since.
    since = time.time()
    start = int(since) + 2
    stop_at = start + seconds
    before = await _clicks(cluster.db.url, since=since)  # 0: the window's own clicks only
    runs = []
    for host in REDIRECTS:
        script, connections = wrk_script(
            work,
            f"{name[:20].replace(' ', '-')}-{host}",
            RANDOM_TAPS,
            work / "tokens.txt",
            rate // 2,
            stop_at,
        )
        runs.append(
            (
                host,
                await start_wrk(
                    host,
                    cluster.url(host, 8080),
                    script,
                    connections,
                    seconds + 2,
                    prefix=tuple(cluster.net.exec("load")),
                ),
            )
        )
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(_sample(cluster, samples, window, since, stop_at + 5))
    try:
        if fault is not None:
            await asyncio.sleep(max(0.0, start + FAULT_AT - time.time()))
            window.note = await fault(cluster)
            print(f"  {window.note}", flush=True)
        tallies: list[Tally] = []
        for host, wrk in runs:
            result, _, tally = await wrk.finish()
            window.p99_ms[host] = result.p99_ms
            tallies.append(tally)
        for tally in tallies:
            for status, n in tally.total().items():
                window.answered[status] = window.answered.get(status, 0) + n
        await _drain(cluster, since, before, window.ok)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    window.recorded = await _clicks(cluster.db.url, since=since) - before
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{cluster.url('sink', 8090)}/stats") as r:
            sink = await r.json()
    window.delivered = sink["distinct_clicks"]
    window.delivered_twice = sink["clicks"] - sink["distinct_clicks"]
    flowing = [(at, n) for at, n in samples if start <= at <= stop_at]
    last_change = flowing[0][0] if flowing else start
    for (_, n0), (at, n1) in itertools.pairwise(flowing):
        if n1 != n0:
            window.stall = max(window.stall, at - last_change)
            last_change = at
    if flowing:
        window.stall = max(window.stall, flowing[-1][0] - last_change)
    return window


async def _sample(
    cluster: Cluster, samples: list[tuple[float, int]], window: Window, start: float, until: float
) -> None:
    """Twice a second: clicks recorded so far (through the primary, when one answers), the
    campaign statistics through the API and the dashboard's campaign page (both read on
    the replica)."""
    api = cluster.url("sink", 8081)
    stats = f"{api}/v1/campaigns/bench/stats"
    page = f"{api}/dashboard/campaigns/bench"
    headers = {"Authorization": f"Bearer {cluster.api_key}"}
    async with api_client() as session:
        signed_in = False
        while time.time() < until:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                samples.append((time.time(), await _clicks(cluster.db.url, within=1, since=start)))
            took, failed = await timed_get(session, stats, headers)
            window.stats_slowest_ms = max(window.stats_slowest_ms, took)
            window.stats_failed += failed
            if not signed_in:
                signed_in = await sign_in_dashboard(session, api, cluster.api_key)
            took, failed = await timed_get(session, page, {})
            window.page_slowest_ms = max(window.page_slowest_ms, took)
            window.page_failed += failed
            await asyncio.sleep(0.5)


async def timed_get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[float, int]:
    """Milliseconds a GET took, and 1 if it did not answer 200."""
    asked = time.perf_counter()
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as r:
            await r.read()
            failed = int(r.status != 200)
    except (aiohttp.ClientError, TimeoutError):
        failed = 1
    return (time.perf_counter() - asked) * 1000, failed


async def sign_in_dashboard(session: aiohttp.ClientSession, api: str, key: str) -> bool:
    """The dashboard's session cookie for this key (as the browser's own form posts it)."""
    try:
        async with session.post(
            f"{api}/dashboard/signin",
            data={"api_key": key, "next": "/dashboard/campaigns/bench"},
            headers={"Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        ) as r:
            await r.read()
            return r.status == 303
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _settle(cluster: Cluster) -> None:
    """Until no click has been recorded for 3 s (the warm-up's, the last window's)."""
    last, still = -1, 0
    while still < 3:
        count = await _clicks(cluster.db.url)
        still = still + 1 if count == last else 0
        last = count
        await asyncio.sleep(1.0)


async def _clicks(database_url: str, within: float = 10, since: float = 0) -> int:
    """Clicks recorded, of those tapped at `since` or later."""
    conn = await asyncpg.connect(database_url, timeout=within)
    try:
        found: int = await conn.fetchval(
            "SELECT count(*) FROM clicks WHERE clicked_at >= to_timestamp($1)",
            since,
            timeout=within,
        )
    finally:
        await conn.close()
    return found


async def _drain(
    cluster: Cluster, start: float, before: int, answered: int, most: float = 150
) -> None:
    """Until every 302 is recorded and delivered, or nothing moved for 60 s."""
    started = last_change = time.monotonic()
    last: tuple[int, int] = (-1, -1)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() - started < most:
            with contextlib.suppress(
                OSError, asyncpg.PostgresError, TimeoutError, aiohttp.ClientError
            ):
                recorded = await _clicks(cluster.db.url, since=start) - before
                async with session.get(f"{cluster.url('sink', 8090)}/stats") as r:
                    delivered = (await r.json())["distinct_clicks"]
                if recorded >= answered and delivered >= answered:
                    return
                if (recorded, delivered) != last:
                    last, last_change = (recorded, delivered), time.monotonic()
                elif time.monotonic() - last_change > 60:
                    return
            await asyncio.sleep(1.0)


def render(windows: list[Window], args: argparse.Namespace) -> tuple[str, bool]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "make cluster-chaos" if args.chaos else "make cluster"
    passed = True
    rows = []
    for w in windows:
        lost = w.ok - w.recorded
        undelivered = w.recorded - w.delivered
        good = lost == 0 and undelivered == 0 and w.server_errors == 0
        passed &= good
        p99 = " / ".join(f"{w.p99_ms.get(h, 0):.1f}" for h in REDIRECTS)
        rows.append(
            f"| {w.name} | {w.ok:,} | {w.recorded:,} | {w.delivered:,} | {w.delivered_twice:,} "
            f"| {w.server_errors} | {w.answered.get(NO_ANSWER, 0):,} | {w.stall:.1f} s | {p99} "
            f"| {w.stats_slowest_ms:.0f} ms ({w.stats_failed} failed) "
            f"| {w.page_slowest_ms:.0f} ms ({w.page_failed} failed) "
            f"| {'yes' if good else '**no**'} |"
        )
    lines = [
        f"## `{command}`, {when}",
        "",
        f"Hosts are network namespaces of one 2-core machine (loadtests/cluster.py): PostgreSQL "
        f"15 primary + streaming replica under pg_auto_failover (a monitor host), tansu, two "
        f"redirect hosts, two forwarder hosts ({PARTITIONS} partitions), the sink and the API "
        f"(DATABASE_READ_URL on the replica), wrk on a load host: {args.rate} taps/s over both "
        f"redirect hosts on {LINKS // 2:,} cached links, faults {FAULT_AT} s into each window. "
        "*Stall*: the longest time no click was recorded while taps flowed; *p99*: each "
        "redirect host's over its window (ms); *stats*: the API's campaign statistics, and "
        "*page*: the dashboard's campaign page (HTML), each polled twice a second, at their "
        "slowest.",
        "",
        "| window | 302 | recorded | delivered | delivered twice | 5xx | unanswered | stall "
        "| p99 redirect1 / 2 | stats slowest | page slowest "
        "| 302 = recorded = delivered, no 5xx |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(f"- {w.name}: {w.note}" for w in windows if w.note),
    ]
    return "\n".join(lines) + "\n", passed


if __name__ == "__main__":
    sys.exit(main())
