"""`make bench-instructions`: CPU instructions per redirect, counted by callgrind.

Timing on a shared 2-core VM drifts by 10-30% between runs; instruction counts
do not. Each server runs under `valgrind --tool=callgrind` twice, answering a
fixed warm-up and then N1 or N2 requests (16 connections, random tokens); the
difference between the two totals divided by N2 - N1 is the cost of one request,
with start-up and shutdown cancelled out. For the real server that includes
publishing the click to the broker, in batches as large as at full speed.

Use it to compare two versions of the hot path: a change that does not move this
number does not change the cost per redirect, whatever wrk says that day. The
real server is counted with its Prometheus metrics on and off (REDIRECT_METRICS_PORT=0),
and (metrics off) on links with four rules (loadtests.databases.FOUR_RULES, each tap
evaluating all four: the smart destinations' cost per tap against a plain link's).

With `--first`, every request is a link's first tap instead (a cold cache: no warm-up,
WARM_WINDOW=0, each token requested once), so the lookup in PostgreSQL is counted too;
only the real server with metrics off is run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from shortlink import domains
from shortlink.dev import embedded
from shortlink.kafka import ensure_topic

from .databases import create_database, drop_database, seed, seed_rules

TOPIC = "bench-clicks"
RULES = "shortlink, four rules, metrics off"
REQUEST = b"GET /%s HTTP/1.1\r\nHost: bench\r\nUser-Agent: Mozilla/5.0 (iPhone) Safari\r\n\r\n"


async def drive(
    port: int, tokens: list[str], count: int, connections: int = 16, *, distinct: bool = False
) -> None:
    """Send `count` requests for random tokens over `connections` keep-alive connections
    (with `distinct`, no token twice)."""
    chosen = iter(random.sample(tokens, count) if distinct else random.choices(tokens, k=count))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for token in chosen:
                writer.write(REQUEST % token.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE)
                if length and int(length[1]):
                    await reader.readexactly(int(length[1]))
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def count_instructions(
    argv: list[str],
    env: dict[str, str],
    port: int,
    tokens: list[str],
    warmup: list[str],
    requests: int,
    out: Path,
    *,
    distinct: bool = False,
) -> int:
    """Total instructions of one server run that answers warm-up plus `requests` requests."""
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not embedded.port_is_open("127.0.0.1", port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not start: {server.stderr.read() if server.stderr else ''}"
                )
            time.sleep(0.5)
        asyncio.run(drive(port, warmup, len(warmup)))
        asyncio.run(drive(port, tokens, requests, distinct=distinct))
        time.sleep(3)  # let the last flush of clicks happen inside the measured run
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=600)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    match = re.search(r"Collected : (\d+)", stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in: {stderr[-2000:]}")
    return int(match[1])


async def add_branded_domain(database_url: str) -> None:
    """A verified domain of the first account: the taps (Host: bench, SHORT_DOMAIN) are not on
    it, so each is checked against the branded hosts and answers as a SHORT_DOMAIN link."""
    conn = await asyncpg.connect(database_url)
    try:
        account_id = await conn.fetchval("SELECT min(id) FROM accounts")
        await domains.add(conn, account_id, "go.brand.example", verified=True)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=2_000)
    parser.add_argument("--small", type=int, default=500, help="requests in the first run")
    parser.add_argument("--large", type=int, default=2_500, help="requests in the second run")
    parser.add_argument(
        "--output-dir", type=Path, help="keep the callgrind files here (for callgrind_annotate)"
    )
    parser.add_argument("--first", action="store_true", help="first taps: a cold cache")
    parser.add_argument(
        "--branded",
        action="store_true",
        help="serve a verified branded domain too (issue 25)",
    )
    parser.add_argument(
        "--only",
        action="append",
        help="count only this server (as the report names it; repeatable), e.g. to compare "
        "two versions of one server side by side",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.stderr.write("valgrind is not installed (apt-get install valgrind)\n")
        return 2
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-instr-")))
        server_url = os.environ.get("DATABASE_URL") or embedded.ensure_postgres(work)
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap is None:
            broker = embedded.Broker("127.0.0.1", embedded.free_port(), work / "tansu.log")
            broker.start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap_servers
        database = f"shortlink_instr_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)
        asyncio.run(ensure_topic(bootstrap, TOPIC, 6))
        links = asyncio.run(
            seed(database_url, max(args.links, args.large) if args.first else args.links)
        )
        if args.branded:
            asyncio.run(add_branded_domain(database_url))
        tokens = [token for token, _ in links]
        rule_tokens = [token for token, _ in asyncio.run(seed_rules(database_url, args.links))]
        tokens_file = work / "tokens.tsv"
        tokens_file.write_text("".join(f"{t}\t{u}\n" for t, u in links))
        python = sys.executable
        port = embedded.free_port()
        redirect = [python, "-m", "shortlink.cli", "redirect", "--workers", "1"]
        redirect_env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CLICK_TOPIC": TOPIC,
            "SPOOL_DIR": str(work / "spool"),
            "LOG_LEVEL": "WARNING",
            # The taps' Host: each is checked as a SHORT_DOMAIN host (shortlink.redirect.domains).
            "SHORT_DOMAIN": "bench",
            # Under valgrind a request takes ~50x longer; a longer linger keeps
            # the flushed batches as large as at full speed (~400 clicks).
            "PUBLISH_LINGER_MS": "2500",
            **({"WARM_WINDOW": "0"} if args.first else {}),
        }
        servers = {
            # Metrics on: each second the worker renders its metrics to a file. Under
            # valgrind a run lasts ~50x longer, so this counts ~50x more writes per
            # request than at full speed: an upper bound of the metrics' cost.
            "shortlink": (
                [*redirect, "--port", str(port)],
                {**redirect_env, "REDIRECT_METRICS_PORT": str(embedded.free_port())},
            ),
            "shortlink, metrics off": (
                [*redirect, "--port", str(port)],
                {**redirect_env, "REDIRECT_METRICS_PORT": "0"},
            ),
            "baseline": (
                [python, "-m", "loadtests.baseline_app", str(tokens_file), str(port)],
                dict(os.environ),
            ),
            RULES: (
                [*redirect, "--port", str(port)],
                {**redirect_env, "REDIRECT_METRICS_PORT": "0"},
            ),
        }
        if args.first:
            servers = {"shortlink, metrics off, first taps": servers["shortlink, metrics off"]}
        if args.only:
            unknown = set(args.only) - set(servers)
            if unknown:
                sys.stderr.write(f"--only: no server named {', '.join(sorted(unknown))}\n")
                return 2
            servers = {name: servers[name] for name in args.only}
        per_request: dict[str, float] = {}
        for name, (argv, env) in servers.items():
            tapped = rule_tokens if name == RULES else tokens
            totals = [
                count_instructions(
                    argv,
                    env,
                    port,
                    tapped,
                    [] if args.first else tapped,
                    n,
                    (args.output_dir or work) / f"callgrind.{name}.{n}",
                    distinct=args.first,
                )
                for n in (args.small, args.large)
            ]
            per_request[name] = (totals[1] - totals[0]) / (args.large - args.small)
            print(f"{name}: {per_request[name]:,.0f} instructions per request", flush=True)
        if args.first or args.only:
            return 0
        print(
            f"ratio baseline / shortlink: {per_request['baseline'] / per_request['shortlink']:.2f}x"
            " (above 1: shortlink does less work per redirect)"
        )
        on, off = per_request["shortlink"], per_request["shortlink, metrics off"]
        print(f"metrics on / off: {on / off:.3f}x ({on - off:+,.0f} instructions per redirect)")
        smart = per_request[RULES]
        print(
            f"plain / four rules: {off / smart:.3f}x ({smart - off:+,.0f} instructions per tap "
            "of a link with four rules; the issue's bar: at least 0.8x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
