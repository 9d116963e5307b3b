"""`make bench-system`: the whole system on this machine, at increasing click rates.

Everything runs at once on the machine's cores, unpinned: PostgreSQL (embedded
unless DATABASE_URL is set), the tansu broker (unless KAFKA_BOOTSTRAP_SERVERS),
one redirect worker, one forwarder, the contract-checking sink (the customer's
endpoint, JSON, every click) and wrk. For each offered rate, wrk taps the
campaign's links for SECONDS (each connection paced, a phone's User-Agent) and
then the run waits until every click is recorded in PostgreSQL and delivered to
the sink. A rate passes when wrk got >= 90 % of it (its pacing falls a few %
short), the redirect p99 was <= 10 ms
and no click was lost (recorded = delivered = 302 answers). The run stops after
the first rate that fails. At the highest passing rate, py-spy samples the
redirect server and the forwarder and /proc gives each process's CPU share.

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
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shortlink import devservers
from shortlink.kafka import ensure_topic

from .bench_forwarder import count_clicks, setup, sink_reset, sink_stats
from .bench_redirect import (
    RESULTS_DOC,
    ROOT,
    WrkResult,
    cpu_seconds,
    create_database,
    drop_database,
    parse_wrk,
    process,
    start_profiler,
    wait_ready,
    write_section,
)

TOPIC = "bench-system-clicks"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
# Each connection waits `delay` ms between requests: connections / delay = the rate.
WRK_SCRIPT = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local headers = {["User-Agent"] = "%s"}
request = function()
  return wrk.format("GET", "/" .. tokens[math.random(#tokens)], headers)
end
delay = function() return %d end
"""


@dataclass
class Step:
    offered: int
    achieved: float
    p50_ms: float
    p99_ms: float
    redirects: int
    errors: int
    recorded: int
    delivered: int
    delivery: dict[str, Any]
    drain_seconds: float

    @property
    def lost(self) -> int:
        return self.redirects - min(self.recorded, self.delivered)

    @property
    def passed(self) -> bool:
        return (
            # wrk paces each connection by a delay after each answer, so it falls a few
            # percent short of the offered rate; a system that cannot keep up falls far short.
            self.achieved >= 0.9 * self.offered
            and self.p99_ms <= 10.0
            and self.errors == 0
            and self.lost == 0
        )


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> WrkResult:
    """One paced wrk run, unpinned (everything shares the machine's cores here)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def group_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for name, members in pids.items():
        total[name] = 0.0
        for pid in members:
            with contextlib.suppress(OSError):
                total[name] += cpu_seconds(pid)
    return total


def children(pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [pid, *(int(p) for p in found)]


def top_functions(raw: Path, count: int = 6) -> list[tuple[str, float]]:
    """The functions py-spy saw on top of the stack most often, with their share."""
    if not raw.exists():
        return []
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frame = stack.split(";")[-1]
        leaves[frame.split(" (")[0] + " (" + frame.rsplit("/", 1)[-1]] += int(samples)
    total = sum(leaves.values()) or 1
    return [(name, n / total) for name, n in leaves.most_common(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--links", type=int, default=50_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    python = sys.executable
    steps: list[Step] = []
    shares: dict[str, float] = {}
    profiles: dict[str, list[tuple[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-sys-")))
        server_url = os.environ.get("DATABASE_URL")
        postmaster: int | None = None
        if server_url is None:
            server_url = devservers.ensure_postgres(work)
            postmaster = int((work / "postgres" / "postmaster.pid").read_text().split()[0])
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        broker_pid: int | None = None
        if bootstrap is None:
            broker = devservers.Broker("127.0.0.1", devservers.free_port(), work / "tansu.log")
            broker.start()
            stack.callback(broker.stop)
            broker_pid = broker.process.pid if broker.process is not None else None
            bootstrap = broker.bootstrap_servers
        database = f"shortlink_sysbench_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)
        asyncio.run(ensure_topic(bootstrap, TOPIC, 6))
        sink_port = devservers.free_port()
        sink = stack.enter_context(
            process([python, "-m", "loadtests.sink", "--port", str(sink_port)])
        )
        while not devservers.port_is_open("127.0.0.1", sink_port):
            time.sleep(0.1)
        print(f"seeding {args.links:,} links ...", flush=True)
        links = asyncio.run(setup(database_url, args.links, f"http://127.0.0.1:{sink_port}/hook"))
        tokens = [link.token for link in links]
        tokens_file = work / "tokens.txt"
        tokens_file.write_text("\n".join(tokens) + "\n")
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CLICK_TOPIC": TOPIC,
            "FORWARDER_GROUP": f"bench-system-{os.getpid()}",
            "FORWARDER_PORT": str(devservers.free_port()),
            "ALLOW_PRIVATE_ENDPOINTS": "true",
            "LOG_LEVEL": "WARNING",
            "SPOOL_DIR": str(work / "spool"),
            "REDIRECT_METRICS_PORT": str(devservers.free_port()),
        }
        port = devservers.free_port()
        redirect = stack.enter_context(
            process(
                [python, "-m", "shortlink.cli", "redirect", "--workers", "1", "--port", str(port)],
                env,
            )
        )
        forwarder = stack.enter_context(process([python, "-m", "forwarder.cli", "run"], env))
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/readyz")
        wait_ready(f"http://127.0.0.1:{env['FORWARDER_PORT']}/readyz")
        groups = {
            "redirect server": [redirect.pid],
            "forwarder": [forwarder.pid],
            "sink": [sink.pid],
        }
        if postmaster is not None:
            groups["PostgreSQL"] = children(postmaster)
        if broker_pid is not None:
            groups["broker (tansu)"] = [broker_pid]
        # Warm the cache and the plans, and check the path end to end.
        run_wrk(url, _script(work, tokens_file, 500, args.connections), 5, args.connections)
        best: Step | None = None
        for offered in (int(r) for r in args.rates.split(",")):
            sink_reset(sink_port)
            time.sleep(2)  # let the warm-up drain
            sink_reset(sink_port)
            before = asyncio.run(count_clicks(database_url))
            if postmaster is not None:
                groups["PostgreSQL"] = children(postmaster)
            cpu_before, started = group_cpu(groups), time.monotonic()
            connections = _connections(offered, args.connections)
            script = _script(work, tokens_file, offered, connections)
            wrk = run_wrk(url, script, args.seconds, connections)
            elapsed = time.monotonic() - started
            cpu_after = group_cpu(groups)
            drain_started = time.monotonic()
            recorded = delivered = 0
            while time.monotonic() - drain_started < 120:
                recorded = asyncio.run(count_clicks(database_url)) - before
                delivered = sink_stats(sink_port)["distinct_clicks"]
                if recorded >= wrk.requests and delivered >= wrk.requests:
                    break
                time.sleep(0.5)
            stats = sink_stats(sink_port)
            step = Step(
                offered,
                wrk.requests_per_second,
                wrk.p50_ms,
                wrk.p99_ms,
                wrk.requests,
                wrk.errors,
                recorded,
                delivered,
                stats["latency_ms"],
                time.monotonic() - drain_started,
            )
            steps.append(step)
            print(
                f"{offered:>6}/s offered: {step.achieved:8.0f}/s, p50 {step.p50_ms:.2f} ms, "
                f"p99 {step.p99_ms:.2f} ms, 302s {step.redirects:,}, recorded {recorded:,}, "
                f"delivered {delivered:,}, "
                f"delivery p50 {step.delivery['p50']} ms p99 {step.delivery['p99']} ms "
                f"-> {'pass' if step.passed else 'FAIL'}",
                flush=True,
            )
            if step.passed:
                best = step
                shares = {name: (cpu_after[name] - cpu_before[name]) / elapsed for name in groups}
            else:
                break
        if best is not None:
            print(f"profiling at {best.offered:,}/s ...", flush=True)
            raws = {name: work / f"{name}.raw" for name in ("redirect server", "forwarder")}
            spies = [
                start_profiler(pid, 20, raws[name])
                for name, pid in (("redirect server", redirect.pid), ("forwarder", forwarder.pid))
            ]
            connections = _connections(best.offered, args.connections)
            run_wrk(url, _script(work, tokens_file, best.offered, connections), 22, connections)
            for spy in spies:
                spy.wait(60)
            profiles = {name: top_functions(raw) for name, raw in raws.items()}
    report = _report(args, steps, best, shares, profiles)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0 if best is not None else 1


def _connections(rate: int, minimum: int) -> int:
    """Enough connections that each waits ~20 ms: wrk's whole-millisecond delays and
    the answer's own time then cost only a few percent of the offered rate."""
    return max(minimum, rate // 50)


def _script(work: Path, tokens_file: Path, rate: int, connections: int) -> Path:
    script = work / f"paced-{rate}.lua"
    # The delay runs after each answer (~0.7 ms here), so it is shortened by that much.
    delay = max(1, round(connections * 1000 / rate - 0.7))
    script.write_text(WRK_SCRIPT % (tokens_file, PHONE, delay))
    return script


def _report(
    args: argparse.Namespace,
    steps: list[Step],
    best: Step | None,
    shares: dict[str, float],
    profiles: dict[str, list[tuple[str, float]]],
) -> str:
    lines = [
        f"## Whole system, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`make bench-system` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}): PostgreSQL, the tansu broker, one redirect worker, "
        "one forwarder, the sink (customer endpoint, JSON, every click) and wrk all on the "
        f"same {os.cpu_count()} cores; {args.links:,} links; each rate offered for "
        f"{args.seconds} s by paced wrk connections (at least {args.connections}, one per 50 "
        "clicks/s) with a phone's User-Agent.",
        "",
        "| offered clicks/s | achieved | redirect p50 | redirect p99 | 302s | recorded "
        "| delivered | click-to-delivery p50 | p99 | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {s.offered:,} | {s.achieved:,.0f} | {s.p50_ms:.2f} ms | {s.p99_ms:.2f} ms "
        f"| {s.redirects:,} | {s.recorded:,} | {s.delivered:,} | {s.delivery['p50']} ms "
        f"| {s.delivery['p99']} ms | {'pass' if s.passed else 'fail'} |"
        for s in steps
    )
    lines.append("")
    if best is None:
        lines.append("No rate passed.")
        return "\n".join(lines) + "\n"
    lines += [
        f"**Highest rate sustained for {args.seconds} s with redirect p99 <= 10 ms and no "
        f"click lost: {best.achieved:,.0f} clicks/s** ({best.offered:,} offered); click to "
        f"delivery p50 {best.delivery['p50']} ms, p99 {best.delivery['p99']} ms.",
        "",
        "CPU at that rate (share of one core): "
        + ", ".join(
            f"{name} {share:.0%}" for name, share in sorted(shares.items(), key=lambda x: -x[1])
        )
        + ".",
        "",
    ]
    for name, top in profiles.items():
        if top:
            lines.append(
                f"py-spy, {name}, most frequent frames: "
                + "; ".join(f"`{frame}` {share:.0%}" for frame, share in top)
            )
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
