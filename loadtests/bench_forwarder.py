"""`make bench-forwarder`: clicks recorded and delivered per second, and click-to-POST delay.

One forwarder process pinned to CPU 0; PostgreSQL (embedded), the broker and the
customer endpoint (loadtests.sink, answering 200 at once) pinned to CPU 1.

1. Throughput: N click events (over N/2 links of one account whose endpoint takes
   every click as JSON) are put on the topic first; then the forwarder starts.
   Reported: clicks recorded per second and delivered per second (from the first
   recorded click to the last), and clicks per CPU-second of the forwarder (the
   per-core figure, whatever else the machine was doing).
2. Latency: events produced at a steady RATE clicks/s for SECONDS, each stamped
   with the moment it was produced; the sink measures, per ClickDetail, the delay
   from that ClickDate to the POST arriving. Reported: p50 / p90 / p99 / max.

Everything it starts, it stops. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from shortlink import accounts, clickevent, schema
from shortlink.dev import embedded
from shortlink.endpoints import set_endpoint
from shortlink.kafka import ensure_topic
from shortlink.links import LinkEntry, NewLink, create_links

from .databases import create_database, drop_database
from .machine import LOAD_CPU, SERVER_CPU, cpu_seconds, process, start_profiler, tree_cpu_seconds
from .results import RESULTS_DOC, ROOT, write_section

TOPIC = "bench-forwarder-clicks"
USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Mobile Safari/537.36 Instagram 312.0.0.32.112 Android",
    "WhatsApp/2.23.20.0 A",
)


def pin(pid: int, cpu: str) -> None:
    subprocess.run(["taskset", "-apc", cpu, str(pid)], check=True, capture_output=True)


def sink_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats: dict[str, Any] = orjson.loads(r.read())
        return stats


def sink_reset(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/reset", method="POST")
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310
        pass


async def setup_account(database_url: str, sink_url: str) -> int:
    """A migrated database with a bench account whose endpoint is the sink (JSON, every click)."""
    conn = await asyncpg.connect(database_url)
    try:
        await schema.migrate(conn)
        account = await accounts.create_account(conn, "bench")
        await set_endpoint(
            conn,
            account.account_id,
            url=sink_url,
            format="json",
            mode="every",
            secret=None,
            enabled=True,
            allow_private=True,
        )
    finally:
        await conn.close()
    return account.account_id


async def setup(database_url: str, links: int, sink_url: str) -> list[LinkEntry]:
    account_id = await setup_account(database_url, sink_url)
    conn = await asyncpg.connect(database_url)
    try:
        specs = [
            NewLink(
                f"https://shop.example.com/offer?r={i}",
                phone_number=f"4477{i:08d}",
                client_ref=f"msg-{i}",
                client_identifier="bench",
            )
            for i in range(links)
        ]
        created = await create_links(conn, account_id, specs)
    finally:
        await conn.close()
    return [LinkEntry.made(account_id, c, s) for c, s in zip(created, specs, strict=True)]


async def produce(bootstrap: str, links: list[LinkEntry], count: int, rate: float | None) -> float:
    """Put `count` click events on the topic, at `rate` per second or as fast as possible."""
    ids = clickevent.EventIds()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    started = time.monotonic()
    try:
        tick = 0.02
        per_tick = count if rate is None else max(1, round(rate * tick))
        sent = 0
        pending = []
        while sent < count:
            n = min(per_tick, count - sent)
            now = time.time()
            for event_id, i in zip(
                ids.take(n, int(now * 1000)), range(sent, sent + n), strict=True
            ):
                link = links[i % len(links)]
                raw = clickevent.facts(
                    link,
                    now,
                    USER_AGENTS[i % len(USER_AGENTS)],
                    f"203.0.113.{i % 250}",
                    None,
                    "GET",
                    False,
                )
                pending.append(
                    await producer.send(
                        TOPIC, clickevent.encode(event_id, raw), key=link.token.encode()
                    )
                )
            sent += n
            if rate is not None:
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
            if len(pending) > 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def count_clicks(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM clicks"))
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the forwarder during the throughput run"
    )
    args = parser.parse_args()
    python = sys.executable
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-fwd-")))
        server_url = os.environ.get("DATABASE_URL")
        postmaster: int | None = None
        if server_url is None:
            server_url = embedded.ensure_postgres(work)
            stack.callback(embedded.stop_postgres, work)  # before its folder is removed
            postmaster = int((work / "postgres" / "postmaster.pid").read_text().split()[0])
            pids = subprocess.run(
                ["pgrep", "-f", str(work / "postgres")], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(subprocess.CalledProcessError):
                    pin(int(pid), LOAD_CPU)
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap is None:
            broker = embedded.Broker("127.0.0.1", embedded.free_port(), work / "tansu.log")
            broker.start()
            stack.callback(broker.stop)
            if broker.process is not None:
                pin(broker.process.pid, LOAD_CPU)
            bootstrap = broker.bootstrap_servers
        database = f"shortlink_fwdbench_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)
        asyncio.run(ensure_topic(bootstrap, TOPIC, 6))
        sink_port = embedded.free_port()
        sink = stack.enter_context(
            process(
                [
                    "taskset",
                    "-c",
                    LOAD_CPU,
                    python,
                    "-m",
                    "loadtests.sink",
                    "--port",
                    str(sink_port),
                ]
            )
        )
        while not embedded.port_is_open("127.0.0.1", sink_port):
            time.sleep(0.1)
        print(f"seeding {args.clicks // 2:,} links ...", flush=True)
        links = asyncio.run(
            setup(database_url, args.clicks // 2, f"http://127.0.0.1:{sink_port}/hook")
        )
        print(f"producing {args.clicks:,} click events ...", flush=True)
        asyncio.run(produce(bootstrap, links, args.clicks, None))

        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CLICK_TOPIC": TOPIC,
            "FORWARDER_GROUP": f"bench-{os.getpid()}",
            "FORWARDER_PORT": str(embedded.free_port()),
            "ALLOW_PRIVATE_ENDPOINTS": "true",
            "LOG_LEVEL": "WARNING",
        }
        forwarder = stack.enter_context(
            process(["taskset", "-c", SERVER_CPU, python, "-m", "forwarder.cli", "run"], env)
        )
        # Throughput: from the first recorded click to the last recorded / delivered.
        if args.profile:
            start_profiler(forwarder.pid, 25, args.profile)
        first_at = recorded_at = delivered_at = None
        cpu_start = pg_start = 0.0
        deadline = time.monotonic() + 600
        while delivered_at is None and time.monotonic() < deadline:
            recorded = asyncio.run(count_clicks(database_url))
            now = time.monotonic()
            if recorded and first_at is None:
                first_at, cpu_start = now, cpu_seconds(forwarder.pid)
                pg_start = tree_cpu_seconds(postmaster) if postmaster else 0.0
            if recorded >= args.clicks and recorded_at is None:
                recorded_at = now
                # PostgreSQL's CPU while recording (its share of delivering included).
                pg_used = tree_cpu_seconds(postmaster) - pg_start if postmaster else 0.0
                fwd_used = cpu_seconds(forwarder.pid) - cpu_start
            if recorded_at is not None and sink_stats(sink_port)["clicks"] >= _humans(args.clicks):
                delivered_at = now
            time.sleep(0.2)
        if first_at is None or recorded_at is None or delivered_at is None:
            raise RuntimeError("the forwarder did not finish in 10 minutes")
        cpu_used = cpu_seconds(forwarder.pid) - cpu_start
        throughput = {
            "recorded_per_s": args.clicks / (recorded_at - first_at),
            "delivered_per_s": args.clicks / (delivered_at - first_at),
            "per_cpu_second": args.clicks / cpu_used,
            "cpu_share": cpu_used / (delivered_at - first_at),
            # Until the last click was recorded (delivery goes on after it).
            "forwarder_us_recording": fwd_used * 1e6 / args.clicks,
            "postgres_us_recording": pg_used * 1e6 / args.clicks,
            "sink": sink_stats(sink_port),
        }
        print(f"throughput: {throughput}", flush=True)

        # Latency at a steady rate.
        sink_reset(sink_port)
        total = args.rate * args.seconds
        print(f"producing {args.rate:,} clicks/s for {args.seconds} s ...", flush=True)
        asyncio.run(produce(bootstrap, links, total, args.rate))
        deadline = time.monotonic() + 60
        while sink_stats(sink_port)["clicks"] < _humans(total) and time.monotonic() < deadline:
            time.sleep(0.5)
        latency = sink_stats(sink_port)
        print(f"latency: {latency}", flush=True)
        del sink

    report = _report(args, throughput, latency)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0


def _humans(clicks: int) -> int:
    """Clicks the sink should receive: every fourth user agent is a preview bot."""
    return clicks - clicks // len(USER_AGENTS)


def _report(args: argparse.Namespace, t: dict[str, Any], latency: dict[str, Any]) -> str:
    lat = latency["latency_ms"]
    return "\n".join(
        [
            f"## `make bench-forwarder`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`make bench-forwarder` on {platform.node()} ({os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}): one forwarder process on CPU {SERVER_CPU}; "
            f"PostgreSQL (embedded), the broker and the endpoint (loadtests.sink, answers 200) on "
            f"CPU {LOAD_CPU}. One account, endpoint format json, mode every; one click in four "
            "is a WhatsApp preview (recorded, not forwarded).",
            "",
            f"- **throughput** ({args.clicks:,} events waiting, then the forwarder starts): "
            f"**{t['recorded_per_s']:,.0f} clicks/s recorded**, "
            f"**{t['delivered_per_s']:,.0f} clicks/s recorded and delivered** end to end; "
            f"{t['per_cpu_second']:,.0f} clicks per CPU-second of the forwarder "
            f"(it used {t['cpu_share']:.0%} of its core); until the last click was recorded, "
            f"CPU per click: forwarder {t['forwarder_us_recording']:.1f} us, PostgreSQL "
            f"{t['postgres_us_recording']:.1f} us (all its processes, the pool's backends "
            f"included); {t['sink']['posts']:,} POSTs, "
            f"{t['sink']['invalid']} failed the contract check",
            f"- **click-to-POST delay at a steady {args.rate:,} clicks/s** ({args.seconds} s, "
            f"default 1 s linger): p50 {lat['p50']:,.0f} ms, p90 {lat['p90']:,.0f} ms, "
            f"p99 {lat['p99']:,.0f} ms, max {lat['max']:,.0f} ms over {latency['clicks']:,} "
            f"clicks in {latency['posts']:,} POSTs",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
