"""`python -m loadtests.bench_recorder`: CPU of recording one batch of clicks, client and server.

Calls forwarder.recorder.record directly (no broker, no delivery loop) on batches of
first taps (each on a link of its own, as after a send: first clicks, conversions,
counters and deliveries are all written) over one account whose endpoint takes every
click as JSON, and reads per click: the Python process's CPU (time.process_time) and
the PostgreSQL backend's (/proc/<pid>/stat of pg_backend_pid(): an embedded server by
default, whose processes this machine's /proc shows). CPU time, not wall time: what a
click costs whatever else the machine does. The database is made on the server given
and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from forwarder.recorder import record
from shortlink import clickevent
from shortlink.dev import embedded

from .bench_forwarder import USER_AGENTS, setup
from .databases import create_database, drop_database
from .machine import cpu_seconds


def on_cpu_ns(pid: int) -> int:
    """Nanoseconds `pid` has run on a CPU so far (/proc/<pid>/schedstat: finer than ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


class ByStatement:
    """A connection whose query methods add up the backend's CPU per statement (keyed by
    its first words), so the parts of a batch's cost can be told apart."""

    def __init__(self, conn: asyncpg.Connection, backend: int) -> None:
        self.conn = conn
        self.backend = backend
        self.spent: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.conn, name)
        if name not in ("fetch", "fetchval", "fetchrow", "execute", "executemany"):
            return method

        async def timed(query: str, *args: Any, **kw: Any) -> Any:
            before = on_cpu_ns(self.backend)
            try:
                return await method(query, *args, **kw)
            finally:
                key = " ".join(query.split()[:4])[:60]
                spent = on_cpu_ns(self.backend) - before
                self.spent[key] = self.spent.get(key, 0) + spent

        return timed


async def measure(
    database_url: str, batch: int, rounds: int, by_statement: bool = False
) -> dict[str, float]:
    links = await setup(database_url, batch * (rounds + 1), "http://127.0.0.1:9/hook")
    ids = clickevent.EventIds()
    conn = await asyncpg.connect(
        database_url, server_settings={"plan_cache_mode": "force_custom_plan"}
    )
    try:
        await conn.execute("ANALYZE")  # as autovacuum would have, on a live database
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        statements = ByStatement(conn, backend) if by_statement else None
        client: list[float] = []
        server: list[float] = []
        for n in range(rounds + 1):
            now = time.time()
            chosen = links[n * batch : (n + 1) * batch]
            events = [
                clickevent.decode(
                    clickevent.encode(
                        event_id,
                        clickevent.facts(
                            link,
                            now,
                            USER_AGENTS[i % 3],
                            f"203.0.113.{i % 250}",
                            None,
                            "GET",
                            False,
                        ),
                    )
                )
                for i, (event_id, link) in enumerate(
                    zip(ids.take(len(chosen), int(now * 1000)), chosen, strict=True)
                )
            ]
            c0, s0 = time.process_time(), cpu_seconds(backend)
            outcome = await record(statements or conn, events, batch_size=100)  # type: ignore[arg-type]
            c1, s1 = time.process_time(), cpu_seconds(backend)
            assert outcome.recorded == len(events), outcome
            if n:  # the first round warms the plans and caches
                client.append((c1 - c0) * 1e6 / batch)
                server.append((s1 - s0) * 1e6 / batch)
    finally:
        await conn.close()
    if statements is not None:
        clicks = batch * (rounds + 1)
        for key, ns in sorted(statements.spent.items(), key=lambda kv: -kv[1]):
            print(f"  PostgreSQL {ns / 1000 / clicks:6.1f} us per click  {key}")
    # Sums over the rounds: /proc counts in clock ticks (10 ms), one round's is coarse.
    return {
        "client_us": statistics.fmean(client),
        "server_us": statistics.fmean(server),
        "total_us": statistics.fmean(client) + statistics.fmean(server),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server-url", help="a PostgreSQL server whose processes this machine's /proc shows"
    )
    parser.add_argument("--database", default=f"shortlink_recbench_{os.getpid()}")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--by-statement", action="store_true", help="the backend's CPU per statement too"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        server_url = args.server_url
        if not server_url:  # its backends' /proc must be this machine's: embedded by default
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-rec-")))
            server_url = embedded.ensure_postgres(work)
            stack.callback(embedded.stop_postgres, work)
        database_url = create_database(server_url, args.database)
        stack.callback(drop_database, server_url, args.database)
        result = asyncio.run(measure(database_url, args.batch, args.rounds, args.by_statement))
    print(
        f"batches of {args.batch:,} first taps, mean of {args.rounds}: CPU per click "
        f"recorder {result['client_us']:.1f} us, PostgreSQL backend {result['server_us']:.1f} us, "
        f"together {result['total_us']:.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
