"""`make bench-system`: the whole system on this machine, at increasing click rates.

Everything runs at once on the machine's cores, unpinned: PostgreSQL (embedded
unless DATABASE_URL is set; its CPU is measured if it runs on this machine), the
tansu broker (unless KAFKA_BOOTSTRAP_SERVERS),
one redirect worker, one forwarder, the contract-checking sink (the customer's
endpoint, JSON, every click) and wrk. Three series of rates, each on a broker,
redirect server and forwarder of its own (the in-memory broker slows as it
fills): *first taps, warmed*, the main one (before each step a campaign's links
are created and read into the redirect worker's cache, then each is tapped
once, as after a send), *repeat taps* (random links of a warm set), and *first
taps, cold* (the main series with WARM_ON_CREATE=false: every answer is a
batched PostgreSQL lookup). For each offered rate, wrk taps for SECONDS (each
connection paced, a phone's User-Agent) and then the run waits until every click
is recorded in PostgreSQL and delivered to the sink. A rate passes when wrk got
>= 90 % of it (its pacing falls a few % short), the redirect p99 was <= 10 ms
and no click was lost (recorded = delivered = 302 answers). A series stops after
its first rate that fails. For every rate, /proc gives each part's CPU time per
click (PostgreSQL: all its server processes, those started during the run
included; wrk: its own rusage) and the machine's busy and steal time. At the
highest passing rate of the main series, py-spy samples the redirect server and
the forwarder. Before the series, the bare aiohttp app of `make bench` is paced
the same way at the lowest and highest rate: the latency floor of the machine
that day, against which the p99 target can be judged.

Everything it starts, it stops. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from shortlink.dev import embedded
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links

from .bench_forwarder import count_clicks, setup_account, sink_reset, sink_stats
from .databases import create_database, drop_database
from .machine import (
    children,
    cpu_seconds,
    local_postmaster,
    metric,
    process,
    start_profiler,
    wait_ready,
)
from .results import RESULTS_DOC, ROOT, write_section
from .wrk import WrkResult, parse_wrk

TOPIC = "bench-system-clicks"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
WARMED = "first taps, warmed"  # each link tapped once, read into the cache when created
REPEAT = "repeat taps"  # random links of a warm set
COLD = "first taps, cold"  # each link tapped once, warming off: every answer reads PostgreSQL
OURS = ("redirect server", "forwarder", "PostgreSQL")
# Each connection waits `delay` ms between requests: connections / delay = the rate.
# (wrk -t1: one Lua state, so `i` walks the file once across all connections.)
SCRIPT_HEAD = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line end
local headers = {["User-Agent"] = "%s"}
delay = function() return %d end
"""
RANDOM_TAPS = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  return wrk.format("GET", "/" .. tokens[math.random(#tokens)], headers)
end
"""
FIRST_TAPS = """
local i = 0
request = function()
  i = i %% #tokens + 1
  return wrk.format("GET", "/" .. tokens[i], headers)
end
"""


@dataclass
class Step:
    series: str
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
    cpu: dict[str, float]  # share of one core by part, during the wrk run
    machine: dict[str, float]  # busy and steal, in cores, during the wrk run
    per_transaction: float  # click events the forwarder recorded per transaction

    @property
    def us_per_click(self) -> dict[str, float]:
        """CPU microseconds per click of each part during the run."""
        rate = max(self.achieved, 1.0)
        return {name: share * 1e6 / rate for name, share in self.cpu.items()}

    @property
    def ours_us(self) -> float:
        """Redirect server, forwarder and PostgreSQL together: the parts shortlink owns."""
        per = self.us_per_click
        return sum(per.get(name, 0.0) for name in OURS)

    @property
    def lost(self) -> int:
        return self.redirects - min(self.recorded, self.delivered)

    @property
    def failures(self) -> list[str]:
        found = []
        # wrk paces each connection by a delay after each answer, so it falls a few
        # percent short of the offered rate; a system that cannot keep up falls far short.
        if self.achieved < 0.9 * self.offered:
            found.append("under 90 % of the offered rate")
        if self.p99_ms > 10.0:
            found.append("p99 > 10 ms")
        if self.errors:
            found.append(f"{self.errors} wrk errors")
        if self.lost > 0:
            found.append(f"{self.lost} lost")
        return found

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail: " + ", ".join(self.failures)


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> WrkResult:
    """One paced wrk run, unpinned (everything shares the machine's cores here)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def process_cpu(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each process of each group."""
    found: dict[str, dict[int, float]] = {}
    for name, members in groups.items():
        found[name] = {}
        for pid in members:
            with contextlib.suppress(OSError):
                found[name][pid] = cpu_seconds(pid)
    return found


def machine_jiffies() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) jiffies of all CPUs so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4], fields[7]


class CpuWindow:
    """Each group's share of one core, and the machine's busy and steal cores, between
    start() and stop(). A process that exits in between is missed; one that starts in
    between counts whole (PostgreSQL forks a backend per connection)."""

    def __init__(self, groups: dict[str, list[int]], postmaster: int | None) -> None:
        self.groups = groups
        self.postmaster = postmaster

    def _refresh(self) -> None:
        if self.postmaster is not None:
            self.groups["PostgreSQL"] = children(self.postmaster)

    def start(self) -> None:
        self._refresh()
        self.before = process_cpu(self.groups)
        self.jiffies = machine_jiffies()
        self.wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.started = time.monotonic()

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        elapsed = time.monotonic() - self.started
        # wrk is the only child reaped during the window (the servers run on); read
        # before pgrep (in _refresh) adds its own bit.
        wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._refresh()
        after = process_cpu(self.groups)
        total, idle, steal = (b - a for a, b in zip(self.jiffies, machine_jiffies(), strict=True))
        shares = {
            name: sum(t - self.before[name].get(pid, 0.0) for pid, t in pids.items()) / elapsed
            for name, pids in after.items()
        }
        shares["wrk"] = (
            wrk.ru_utime + wrk.ru_stime - self.wrk_before.ru_utime - self.wrk_before.ru_stime
        ) / elapsed
        cores = os.cpu_count() or 1
        machine = {
            "busy": (total - idle - steal) / total * cores if total else 0.0,
            "steal": steal / total * cores if total else 0.0,
        }
        return shares, machine


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


@dataclass(frozen=True)
class Series:
    name: str
    settings: dict[str, str]  # for the redirect server
    rates: list[int]
    fresh: bool  # each tap a link created for the step (else random links of a warm set)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        default="3000,5000,6000,7000,8000",
        help="first taps on warmed links (the main series), clicks/s",
    )
    parser.add_argument("--repeat-rates", default="5000,7000")
    parser.add_argument("--cold-rates", default="2000,3000,4000,5000")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--links", type=int, default=50_000, help="warm links, repeat taps")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    python = sys.executable
    steps: list[Step] = []
    best: dict[str, Step] = {}
    profiles: dict[str, dict[str, list[tuple[str, float]]]] = {}
    series_list = [
        Series(WARMED, {}, _rates(args.rates), fresh=True),
        Series(REPEAT, {}, _rates(args.repeat_rates), fresh=False),
        Series(COLD, {"WARM_ON_CREATE": "false"}, _rates(args.cold_rates), fresh=True),
    ]
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-sys-")))
        server_url = os.environ.get("DATABASE_URL")
        postmaster: int | None = None
        if server_url is None:
            server_url = embedded.ensure_postgres(work)
            stack.callback(embedded.stop_postgres, work)  # before its folder is removed
            postmaster = int((work / "postgres" / "postmaster.pid").read_text().split()[0])
        else:  # a server of this machine (the system one, say) is measured too
            postmaster = local_postmaster(server_url)
        given_broker = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        database = f"shortlink_sysbench_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)
        sink_port = embedded.free_port()
        sink = stack.enter_context(
            process([python, "-m", "loadtests.sink", "--port", str(sink_port)])
        )
        while not embedded.port_is_open("127.0.0.1", sink_port):
            time.sleep(0.1)
        account_id = asyncio.run(setup_account(database_url, f"http://127.0.0.1:{sink_port}/hook"))
        print(f"seeding {args.links:,} links for repeat taps and the machine floor ...", flush=True)
        warm_set = asyncio.run(create_campaign(database_url, account_id, args.links, "warm-set"))
        warm_file = work / "warm.txt"
        warm_file.write_text("\n".join(warm_set) + "\n")
        all_rates = [r for series in series_list for r in series.rates]
        floor = machine_floor(
            work, warm_file, sorted({min(all_rates), max(all_rates)}), args.connections
        )
        for number, series in enumerate(series_list):
            # Each series on a broker, redirect server and forwarder of its own: the
            # in-memory broker slows as it fills, so no series inherits another's topic.
            with contextlib.ExitStack() as run:
                bootstrap = given_broker
                broker_pid: int | None = None
                topic = f"{TOPIC}-{number}"
                if bootstrap is None:
                    broker = embedded.Broker(
                        "127.0.0.1", embedded.free_port(), work / f"tansu-{number}.log"
                    )
                    broker.start()
                    run.callback(broker.stop)
                    broker_pid = broker.process.pid if broker.process is not None else None
                    bootstrap = broker.bootstrap_servers
                asyncio.run(ensure_topic(bootstrap, topic, 6))
                metrics_port = embedded.free_port()
                env = {
                    **os.environ,
                    "DATABASE_URL": database_url,
                    "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "CLICK_TOPIC": topic,
                    "FORWARDER_GROUP": f"bench-system-{os.getpid()}-{number}",
                    "FORWARDER_PORT": str(embedded.free_port()),
                    "ALLOW_PRIVATE_ENDPOINTS": "true",
                    "LOG_LEVEL": "WARNING",
                    "SPOOL_DIR": str(work / f"spool-{number}"),
                    "REDIRECT_METRICS_PORT": str(metrics_port),
                    "LINK_CACHE_ENTRIES": "2000000",
                    **series.settings,
                }
                port = embedded.free_port()
                argv = [python, "-m", "shortlink.cli", "redirect", "--workers", "1"]
                redirect = run.enter_context(process([*argv, "--port", str(port)], env))
                forwarder = run.enter_context(process([python, "-m", "forwarder.cli", "run"], env))
                url = f"http://127.0.0.1:{port}"
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
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
                if not series.fresh:
                    _wait_metric(metrics_url, "shortlink_link_cache_entries", args.links)

                def taps(
                    rate: int,
                    connections: int,
                    series: Series = series,
                    metrics_url: str = metrics_url,
                ) -> Path:
                    if not series.fresh:
                        return _script(work, RANDOM_TAPS, warm_file, rate, connections)
                    count = _links_for(rate, args.seconds)
                    warmed = metric(metrics_url, "shortlink_link_cache_warmed_total")
                    tokens = asyncio.run(
                        create_campaign(database_url, account_id, count, f"{series.name}-{rate}")
                    )
                    if series.settings.get("WARM_ON_CREATE") != "false":
                        # Taps start once the worker has the links: as after a real send.
                        _wait_metric(
                            metrics_url, "shortlink_link_cache_warmed_total", warmed + count
                        )
                    fresh = work / f"{series.name.replace(' ', '-')}-{rate}.txt"
                    fresh.write_text("\n".join(tokens) + "\n")
                    return _script(work, FIRST_TAPS, fresh, rate, connections)

                for offered in series.rates:
                    connections = paced_connections(offered, args.connections)
                    result = _step(
                        series.name,
                        offered,
                        url,
                        taps(offered, connections),
                        connections,
                        args.seconds,
                        database_url,
                        sink_port,
                        groups,
                        postmaster,
                        f"http://127.0.0.1:{env['FORWARDER_PORT']}/metrics",
                    )
                    steps.append(result)
                    if not result.passed:
                        break
                    best[series.name] = result
                found = best.get(series.name)
                if found is not None and series.name == WARMED and not args.no_profile:
                    print(f"profiling {series.name} at {found.offered:,}/s ...", flush=True)
                    raws = {name: work / f"{name}.raw" for name in ("redirect server", "forwarder")}
                    spies = [
                        start_profiler(pid, 20, raws[name])
                        for name, pid in (
                            ("redirect server", redirect.pid),
                            ("forwarder", forwarder.pid),
                        )
                    ]
                    connections = paced_connections(found.offered, args.connections)
                    run_wrk(url, taps(found.offered, connections), 22, connections)
                    for spy in spies:
                        spy.wait(60)
                    profiles[series.name] = {name: top_functions(raw) for name, raw in raws.items()}
                    wait_drained(database_url, sink_port)
    report = _report(args, steps, best, profiles, floor)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0 if all(series.name in best for series in series_list) else 1


def _rates(text: str) -> list[int]:
    return [int(r) for r in text.split(",") if r]


def _wait_metric(url: str, name: str, at_least: float, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while metric(url, name) < at_least:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not reach {at_least:,.0f}")
        time.sleep(0.05)


def _step(
    series: str,
    offered: int,
    url: str,
    script: Path,
    connections: int,
    seconds: int,
    database_url: str,
    sink_port: int,
    groups: dict[str, list[int]],
    postmaster: int | None,
    forwarder_metrics: str,
) -> Step:
    sink_reset(sink_port)
    before = asyncio.run(count_clicks(database_url))
    events = metric(forwarder_metrics, "forwarder_events_received_total")
    transactions = metric(forwarder_metrics, "forwarder_record_transactions_total")
    window = CpuWindow(groups, postmaster)
    window.start()
    wrk = run_wrk(url, script, seconds, connections)
    cpu, machine = window.stop()
    drain_started = time.monotonic()
    recorded = delivered = 0
    while time.monotonic() - drain_started < 120:
        recorded = asyncio.run(count_clicks(database_url)) - before
        delivered = sink_stats(sink_port)["distinct_clicks"]
        if recorded >= wrk.requests and delivered >= wrk.requests:
            break
        time.sleep(0.5)
    wait_drained(database_url, sink_port)
    stats = sink_stats(sink_port)
    events = metric(forwarder_metrics, "forwarder_events_received_total") - events
    transactions = metric(forwarder_metrics, "forwarder_record_transactions_total") - transactions
    result = Step(
        series,
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
        cpu,
        machine,
        events / max(transactions, 1.0),
    )
    print(
        f"{series}, {offered:>5}/s offered: {result.achieved:6.0f}/s, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, 302s "
        f"{result.redirects:,}, recorded {recorded:,}, delivered {delivered:,}, "
        f"delivery p50 {result.delivery['p50']} ms p99 {result.delivery['p99']} ms "
        f"-> {result.verdict}\n    CPU per click (us): "
        + ", ".join(f"{name} {us:.0f}" for name, us in result.us_per_click.items())
        + f"; ours {result.ours_us:.0f}; machine busy {machine['busy']:.2f} cores, "
        f"steal {machine['steal']:.2f}; {result.per_transaction:.0f} events recorded per "
        "transaction",
        flush=True,
    )
    return result


async def create_campaign(database_url: str, account_id: int, count: int, name: str) -> list[str]:
    """`count` links of one campaign (one target URL, one link per recipient); tokens."""
    conn = await asyncpg.connect(database_url)
    try:
        specs = [
            NewLink(
                f"https://shop.example.com/{name}?utm_source=sms",
                phone_number=f"4477{i:08d}",
                client_ref=f"{name}-{i}",
                client_identifier=name,
            )
            for i in range(count)
        ]
        created = await create_links(conn, account_id, specs)
    finally:
        await conn.close()
    return [link.token for link in created]


def paced_connections(rate: int, minimum: int) -> int:
    """Enough connections that each waits ~20 ms: wrk's whole-millisecond delays and
    the answer's own time then cost only a few percent of the offered rate."""
    return max(minimum, rate // 50)


def _script(work: Path, body: str, tokens_file: Path, rate: int, connections: int) -> Path:
    script = work / f"{tokens_file.stem}-paced-{rate}.lua"
    # The delay runs after each answer (~0.7 ms here), so it is shortened by that much.
    delay = max(1, round(connections * 1000 / rate - 0.7))
    script.write_text(SCRIPT_HEAD % (tokens_file, PHONE, delay) + body % ())
    return script


def _links_for(rate: int, seconds: int) -> int:
    """Fresh links for one first-taps run (or the 22 s profiling run), with room."""
    return int(rate * max(seconds, 22) * 1.1)


def machine_floor(
    work: Path, tokens_file: Path, rates: list[int], minimum: int
) -> dict[int, WrkResult]:
    """Redirect p50/p99 of the bare baseline app, paced like the real runs (15 s a rate)."""
    table = work / "baseline.tsv"
    table.write_text(
        "".join(
            f"{token}\thttps://shop.example.com/\n" for token in tokens_file.read_text().split()
        )
    )
    port = embedded.free_port()
    found: dict[int, WrkResult] = {}
    argv = [sys.executable, "-m", "loadtests.baseline_app", str(table), str(port)]
    with process(argv):
        deadline = time.monotonic() + 60
        while not embedded.port_is_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline app did not start")
            time.sleep(0.1)
        for rate in rates:
            connections = paced_connections(rate, minimum)
            script = _script(work, RANDOM_TAPS, tokens_file, rate, connections)
            found[rate] = run_wrk(f"http://127.0.0.1:{port}", script, 15, connections)
            print(
                f"machine floor, bare aiohttp app, {rate}/s offered: "
                f"{found[rate].requests_per_second:.0f}/s, p50 {found[rate].p50_ms:.2f} ms, "
                f"p99 {found[rate].p99_ms:.2f} ms",
                flush=True,
            )
    return found


def wait_drained(database_url: str, sink_port: int, quiet: float = 2.0) -> None:
    """Wait until no click has been recorded or delivered for `quiet` seconds."""
    last, still_since = (-1, -1), time.monotonic()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = (asyncio.run(count_clicks(database_url)), sink_stats(sink_port)["posts"])
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
        time.sleep(0.5)


def _report(
    args: argparse.Namespace,
    steps: list[Step],
    best: dict[str, Step],
    profiles: dict[str, dict[str, list[tuple[str, float]]]],
    floor: dict[int, WrkResult],
) -> str:
    lines = [
        f"## `make bench-system`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`make bench-system` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}): PostgreSQL, the tansu broker, one redirect worker, "
        "one forwarder, the sink (customer endpoint, JSON, every click) and wrk all on the "
        f"same {os.cpu_count()} cores; each rate offered for {args.seconds} s by paced wrk "
        f"connections (at least {args.connections}, one per 50 clicks/s) with a phone's "
        f"User-Agent. *{WARMED}* (the main series): each step taps, once each, links of a "
        "campaign created just before it, which the redirect worker read into its cache when "
        f"they were created, as after a real send. *{REPEAT}*: random links among "
        f"{args.links:,} in the cache. *{COLD}*: the same as the main series with "
        "WARM_ON_CREATE=false, so every answer reads PostgreSQL (batched lookups). Each series "
        "runs on a broker, redirect server and forwarder of its own (tansu slows as it fills). "
        "A rate passes with >= 90 % of it achieved, redirect p99 <= 10 ms and no click lost.",
        "",
        "| taps | offered clicks/s | achieved | redirect p50 | redirect p99 | 302s | recorded "
        "| delivered | click-to-delivery p50 | p99 | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {s.series} | {s.offered:,} | {s.achieved:,.0f} | {s.p50_ms:.2f} ms "
        f"| {s.p99_ms:.2f} ms | {s.redirects:,} | {s.recorded:,} | {s.delivered:,} "
        f"| {s.delivery['p50']} ms | {s.delivery['p99']} ms | {s.verdict} |"
        for s in steps
    )
    parts = list(dict.fromkeys(part for s in steps for part in s.cpu))
    lines += [
        "",
        "The machine's floor, measured first in the same run: the bare aiohttp app of `make "
        "bench` (a dict lookup and a 302) paced the same way, alone: "
        + "; ".join(
            f"{rate:,}/s offered: {r.requests_per_second:,.0f}/s, p50 {r.p50_ms:.2f} ms, "
            f"p99 {r.p99_ms:.2f} ms"
            for rate, r in floor.items()
        )
        + ". Where its p99 is above 10 ms, the machine itself misses the target that day.",
        "",
        "CPU per click of each part during each run, in microseconds (its CPU time over the "
        "clicks answered); *ours* is the redirect server, the forwarder and PostgreSQL "
        "together. Machine busy and steal (time the VM's host gave the cores to someone "
        "else) in cores.",
        "",
        "| taps | offered clicks/s | " + " | ".join(parts) + " | ours | machine busy | steal |",
        "|---" * (len(parts) + 5) + "|",
    ]
    lines.extend(
        f"| {s.series} | {s.offered:,} | "
        + " | ".join(f"{s.us_per_click.get(part, 0.0):.0f}" for part in parts)
        + f" | {s.ours_us:.0f} | {s.machine['busy']:.2f} | {s.machine['steal']:.2f} |"
        for s in steps
    )
    lines.append("")
    for series in (WARMED, REPEAT, COLD):
        found = best.get(series)
        if found is None:
            lines += [f"{series}: no rate passed.", ""]
            continue
        lines += [
            f"**{series}: highest rate sustained for {args.seconds} s with redirect p99 <= "
            f"10 ms and no click lost: {found.achieved:,.0f} clicks/s** ({found.offered:,} "
            f"offered; p99 {found.p99_ms:.2f} ms); CPU per click there: "
            + ", ".join(f"{name} {us:.0f} us" for name, us in found.us_per_click.items())
            + f"; **ours {found.ours_us:.0f} us** (target <= 150); click to delivery p50 "
            f"{found.delivery['p50']} ms, p99 {found.delivery['p99']} ms.",
            "",
        ]
        for name, top in profiles.get(series, {}).items():
            if top:
                lines.append(
                    f"py-spy, {series} at {found.offered:,}/s, {name}, most frequent frames: "
                    + "; ".join(f"`{frame}` {share:.0%}" for frame, share in top)
                )
                lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
