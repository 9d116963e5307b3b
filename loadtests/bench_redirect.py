"""`make bench`: the redirect server against a bare aiohttp baseline, in one run.

Both servers run pinned to CPU 0; wrk (and the broker) run pinned to CPU 1.
The real server is one worker with 100,000 links seeded, its cache warmed by
requesting every link once, and click publishing on to a real broker. The
baseline is loadtests/baseline_app.py: a dict lookup and a 302. wrk uses 64
connections and random tokens from the seeded set, 10 s per run, 3 runs each,
alternating; then each server at a fixed offered rate (--rate), the cold one on
fresh links too. The report (stdout and docs/benchmarks.md) gives req/s and p50/p99
for both, their ratio (median over median), the clicks published per second,
and the memory the warm cache takes.

The cost of the Prometheus metrics is measured in the same run: the same server
also runs with REDIRECT_METRICS_PORT=0 (no metrics file, no metrics server),
while the metrics server of the first is scraped every second during its runs
(Prometheus usually scrapes every 15 s), and the report gives the ratio.

Uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set, else starts the embedded
PostgreSQL and a tansu broker in a temporary folder. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from shortlink.dev import embedded
from shortlink.kafka import ensure_topic

from .databases import create_database, drop_database, seed_account, seed_rules
from .machine import (
    LOAD_CPU,
    SERVER_CPU,
    cpu_seconds,
    metric,
    process,
    rss_kib,
    start_profiler,
    wait_ready,
)
from .results import RESULTS_DOC, ROOT, write_section
from .wrk import WrkResult, run_wrk

TOPIC = "bench-clicks"
NO_METRICS = "shortlink, metrics off"
WARMED = "first taps, warmed"
COLD = "first taps, cold"
SCRAPED_302 = re.compile(
    r'^shortlink_redirect_responses_total\{status="302"\} (\S+)$', re.MULTILINE
)
CREATE_BATCH = 200_000  # recipients per POST /v1/links
WRK_SCRIPT = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line:match("^(%%S+)") end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  return wrk.format("GET", "/" .. tokens[math.random(#tokens)])
end
"""
# Each token once, in order (one wrk thread, so one Lua state): first taps only.
ONCE_SCRIPT = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line:match("^(%%S+)") end
local next_token = 0
request = function()
  next_token = next_token %% #tokens + 1
  return wrk.format("GET", "/" .. tokens[next_token])
end
"""
# The same requests, each connection pausing between them: a fixed offered rate.
PACED = """
delay = function() return %d end
"""
PACED_SCRIPT = WRK_SCRIPT + PACED
# Taps from an iPhone (no Accept-Language, from 127.0.0.1): on links with FOUR_RULES each
# tap evaluates all four rules; on plain links the same requests, for the ratio.
IPHONE_SCRIPT = (
    WRK_SCRIPT
    + 'wrk.headers["User-Agent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) '
    'AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"\n'
)
PLAIN_IPHONE = "plain links, iPhone"
RULES_IPHONE = "links with four rules, iPhone"
PACED_ONCE_SCRIPT = ONCE_SCRIPT + PACED


@dataclass
class Measurements:
    results: dict[str, list[WrkResult]]
    paced: dict[str, list[WrkResult]]
    published: list[float]
    seed_seconds: float
    warm_seconds: float
    rss_cold: int
    rss_warm: int
    rss_after: int
    readiness: str
    scrapes: int  # successful scrapes of the metrics-on server during its runs
    scraped_redirects: int  # redirects counted by its metrics at the last scrape
    first: dict[str, list[WrkResult]]  # first-tap series: warmed, cold
    fresh_links: list[int]  # links created for each round's first-tap runs
    warm_after_create: list[float]  # seconds from the API's 201 to every link cached
    warm_within: list[float]  # bound of the worker's histogram bucket: notification -> cached
    warm_rss_per_100k: float  # MiB
    broker_cpu: list[float]  # share of a core the broker used, per first-tap run
    smart: dict[str, list[WrkResult]]  # plain links against links with four rules


class Scraper:
    """Scrapes a metrics URL every second while active, like a (busy) Prometheus."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self.redirects = 0

    @contextlib.contextmanager
    def active(self, on: bool) -> Iterator[None]:
        if not on:
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(stop,), daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310
                text = response.read().decode()
            self.redirects = int(sum(float(n) for n in SCRAPED_302.findall(text)))
            self.scrapes += 1
            stop.wait(self.interval)


def histogram(url: str, name: str) -> dict[float, float]:
    """The cumulative bucket counts of a histogram on a Prometheus page, by upper bound."""
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own URL
        text = response.read().decode()
    return {
        float(bound): float(count)
        for bound, count in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)
    }


def bucket_reached(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bound whose bucket gained every observation made in between."""
    added = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if added and after[bound] - before.get(bound, 0.0) >= added:
            return bound
    return float("inf")


def create_through_api(api_url: str, key: str, count: int, campaign: str) -> list[str]:
    """`count` fresh links made by POST /v1/links (200,000 at most per request); tokens."""
    made: list[str] = []
    while len(made) < count:
        size = min(CREATE_BATCH, count - len(made))
        body = orjson.dumps(
            {
                "url": f"https://shop.example.com/{campaign}?utm_source=sms",
                "client_identifier": campaign,
                "recipients": [
                    {"phone_number": f"4477{len(made) + i:08d}", "client_ref": f"m{len(made) + i}"}
                    for i in range(size)
                ],
            }
        )
        request = urllib.request.Request(  # noqa: S310 - our own URL
            f"{api_url}/v1/links",
            data=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            made += [link["token"] for link in orjson.loads(response.read())["links"]]
    return made


async def warm(base_url: str, tokens: list[str], concurrency: int = 64) -> float:
    """Request every token once (fills the cache); returns the seconds it took."""
    queue = iter(tokens)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for token in queue:
                async with session.get(f"{base_url}/{token}", allow_redirects=False) as r:
                    if r.status != 302:
                        raise RuntimeError(f"warm-up: {token} answered {r.status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def topic_size(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # loads the cluster metadata
        partitions = consumer.partitions_for_topic(TOPIC) or set()
        ends = await consumer.end_offsets([TopicPartition(TOPIC, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--fresh-links",
        type=int,
        default=0,
        help="links created through the API for each first-tap run; 0 (the default): 1.5 "
        "times what the round's fastest repeat-tap run answered, so no first tap is a repeat",
    )
    parser.add_argument(
        "--rate", type=int, default=4000, help="offered req/s for the fixed-rate latency runs"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record both servers with py-spy during their first run (PATH.<server>.txt)",
    )
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.stderr.write("the benchmark needs two CPUs (server and load on separate cores)\n")
        return 2
    if shutil.which("wrk") is None:
        sys.stderr.write("wrk is not installed (apt-get install wrk)\n")
        return 2

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-bench-")))
        server_url = os.environ.get("DATABASE_URL")
        if server_url is None:
            server_url = embedded.ensure_postgres(work)
            stack.callback(embedded.stop_postgres, work)  # before its folder is removed
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        broker_pid = 0
        if bootstrap is None:
            broker = embedded.Broker("127.0.0.1", embedded.free_port(), work / "tansu.log")
            broker.start()
            stack.callback(broker.stop)
            if broker.process is not None:  # the broker shares the load generator's core
                broker_pid = broker.process.pid
                subprocess.run(
                    ["taskset", "-pc", LOAD_CPU, str(broker.process.pid)],
                    check=True,
                    capture_output=True,
                )
            bootstrap = broker.bootstrap_servers
        database = f"shortlink_bench_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)
        asyncio.run(ensure_topic(bootstrap, TOPIC, 6))

        print(f"seeding {args.links:,} links ...", flush=True)
        started = time.perf_counter()
        links, api_key = asyncio.run(seed_account(database_url, args.links))
        seed_seconds = time.perf_counter() - started
        tokens_file = work / "tokens.tsv"
        tokens_file.write_text("".join(f"{t}\t{u}\n" for t, u in links))
        script = work / "random.lua"
        script.write_text(WRK_SCRIPT % tokens_file)
        rule_links = asyncio.run(seed_rules(database_url, args.links))
        rules_file = work / "rules.tsv"
        rules_file.write_text("".join(f"{t}\t{u}\n" for t, u in rule_links))
        iphone_scripts = {PLAIN_IPHONE: work / "plain-iphone.lua", RULES_IPHONE: work / "rules.lua"}
        iphone_scripts[PLAIN_IPHONE].write_text(IPHONE_SCRIPT % tokens_file)
        iphone_scripts[RULES_IPHONE].write_text(IPHONE_SCRIPT % rules_file)

        real_port, bare_port, base_port, cold_port = (embedded.free_port() for _ in range(4))
        metrics_port = embedded.free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        python = sys.executable

        def redirect_server(
            port: int, metrics_port: int, spool: str, **settings: str
        ) -> subprocess.Popen[bytes]:
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "CLICK_TOPIC": TOPIC,
                "SPOOL_DIR": str(work / spool),
                "LOG_LEVEL": "WARNING",
                "REDIRECT_METRICS_PORT": str(metrics_port),
                # Room for every link the run creates: no eviction bends the figures.
                "LINK_CACHE_ENTRIES": "4000000",
                **settings,
            }
            argv = [python, "-m", "shortlink.cli", "redirect", "--workers", "1"]
            return stack.enter_context(
                process(["taskset", "-c", SERVER_CPU, *argv, "--port", str(port)], env)
            )

        real = redirect_server(real_port, metrics_port, "spool")
        # Only for repeat taps (the metrics cost): it does not read the links the first-tap
        # runs create, which would take the warmed server's core while that one warms (so it
        # does not warm at start either: the seeded links are tapped once, below).
        bare = redirect_server(bare_port, 0, "spool-bare", WARM_ON_CREATE="false")
        cold = redirect_server(cold_port, 0, "spool-cold", WARM_ON_CREATE="false")
        api_port = embedded.free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        stack.enter_context(
            process(
                [
                    "taskset",
                    "-c",
                    LOAD_CPU,
                    python,
                    "-m",
                    "shortlink.cli",
                    "api",
                    "--workers",
                    "1",
                    "--port",
                    str(api_port),
                ],
                {
                    **os.environ,
                    "DATABASE_URL": database_url,
                    "SHORT_DOMAIN": "bench.example",
                    "LOG_LEVEL": "WARNING",
                    "API_METRICS_PORT": "0",
                },
            )
        )
        base = stack.enter_context(
            process(
                [
                    "taskset",
                    "-c",
                    SERVER_CPU,
                    python,
                    "-m",
                    "loadtests.baseline_app",
                    str(tokens_file),
                    str(base_port),
                ],
            )
        )
        for port in (real_port, bare_port, cold_port):
            wait_ready(f"http://127.0.0.1:{port}/readyz")
        wait_ready(f"{api_url}/healthz")
        # The servers warmed the seeded links as they started (WARM_WINDOW); wait for it.
        deadline = time.monotonic() + 120
        while metric(metrics_url, "shortlink_link_cache_entries") < 2 * args.links:
            if time.monotonic() > deadline:
                raise RuntimeError("the redirect server did not warm the seeded links")
            time.sleep(0.2)
        rss_cold = rss_kib(cold.pid)
        print("the cold server reads every seeded link once ...", flush=True)
        warm_seconds = asyncio.run(warm(f"http://127.0.0.1:{cold_port}", [t for t, _ in links]))
        rss_warm = rss_kib(cold.pid)
        print("so does the server with metrics off ...", flush=True)
        asyncio.run(warm(f"http://127.0.0.1:{bare_port}", [t for t, _ in links]))
        deadline = time.monotonic() + 30
        while not embedded.port_is_open("127.0.0.1", base_port):
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline server did not start")
            time.sleep(0.1)
        time.sleep(1)

        servers = {
            "shortlink": (real_port, real.pid),
            NO_METRICS: (bare_port, bare.pid),
            "baseline": (base_port, base.pid),
        }
        results: dict[str, list[WrkResult]] = {name: [] for name in servers}
        first: dict[str, list[WrkResult]] = {WARMED: [], COLD: []}
        published: list[float] = []
        warm_after_create: list[float] = []
        warm_within: list[float] = []
        broker_cpu: list[float] = []
        warm_rss: list[float] = []
        scraper = Scraper(metrics_url)
        fresh_links: list[int] = []
        smart: dict[str, list[WrkResult]] = {PLAIN_IPHONE: [], RULES_IPHONE: []}
        for run in range(1, args.runs + 1):
            for name, lua in iphone_scripts.items():
                result = run_wrk(
                    f"http://127.0.0.1:{real_port}/", lua, args.seconds, args.connections, real.pid
                )
                smart[name].append(result)
                _show(f"run {run} {name}", result)
            for name, (port, pid) in servers.items():
                before = asyncio.run(topic_size(bootstrap))
                profiler = None
                if args.profile and run == 1:
                    profiler = start_profiler(
                        pid, args.seconds - 1, args.profile.with_suffix(f".{name}.txt")
                    )
                with scraper.active(name == "shortlink"):
                    result = run_wrk(
                        f"http://127.0.0.1:{port}/", script, args.seconds, args.connections, pid
                    )
                if profiler is not None:
                    profiler.wait(30)
                results[name].append(result)
                if name == "shortlink":
                    time.sleep(1.0)  # let the last clicks of the run reach the broker
                    after = asyncio.run(topic_size(bootstrap))
                    published.append((after - before) / args.seconds)
                    _show(f"run {run} {name}", result, published[-1])
                else:
                    _show(f"run {run} {name}", result)
            # First taps on links made through the API just now, enough of them that each
            # tap is a first one (a first tap is cheaper than a repeat here, not dearer)...
            fresh = args.fresh_links or round(
                1.5 * args.seconds * max(r[-1].requests_per_second for r in results.values())
            )
            fresh_links.append(fresh)
            # ... warmed on create ...
            cached_before = metric(metrics_url, "shortlink_link_cache_warmed_total")
            warm_histogram = histogram(metrics_url, "shortlink_link_warm_seconds")
            rss_before = rss_kib(real.pid)
            created_at = time.perf_counter()
            tokens = create_through_api(api_url, api_key, fresh, f"warm{run}")
            answered = time.perf_counter()
            while metric(metrics_url, "shortlink_link_cache_warmed_total") < cached_before + fresh:
                if time.perf_counter() - answered > 60:
                    raise RuntimeError("created links did not reach the redirect server's cache")
                time.sleep(0.01)
            warm_after_create.append(time.perf_counter() - answered)
            time.sleep(1.1)  # the worker writes its metrics once a second
            warm_within.append(
                bucket_reached(
                    warm_histogram, histogram(metrics_url, "shortlink_link_warm_seconds")
                )
            )
            warm_rss.append((rss_kib(real.pid) - rss_before) / 1024 / fresh * 100_000)
            print(
                f"run {run}: {fresh:,} links created through the API in "
                f"{answered - created_at:.1f} s, all cached within {warm_within[-1]:g} s of "
                f"the notification (seen {warm_after_create[-1]:.2f} s after the last answer, "
                "through metrics written once a second)",
                flush=True,
            )
            once = work / f"once-{run}.lua"
            (work / f"fresh-{run}.txt").write_text("\n".join(tokens) + "\n")
            once.write_text(ONCE_SCRIPT % (work / f"fresh-{run}.txt"))
            broker_before, run_started = (
                cpu_seconds(broker_pid) if broker_pid else 0.0,
                time.monotonic(),
            )
            result = run_wrk(
                f"http://127.0.0.1:{real_port}/", once, args.seconds, args.connections, real.pid
            )
            if broker_pid:
                broker_cpu.append(
                    (cpu_seconds(broker_pid) - broker_before) / (time.monotonic() - run_started)
                )
            first[WARMED].append(result)
            _show(f"run {run} {WARMED}", result, repeats=result.requests > fresh)
            # ... and cold: the same, on the server that reads them only when tapped.
            tokens = create_through_api(api_url, api_key, fresh, f"cold{run}")
            (work / f"cold-{run}.txt").write_text("\n".join(tokens) + "\n")
            once.write_text(ONCE_SCRIPT % (work / f"cold-{run}.txt"))
            result = run_wrk(
                f"http://127.0.0.1:{cold_port}/", once, args.seconds, args.connections, cold.pid
            )
            first[COLD].append(result)
            _show(f"run {run} {COLD}", result, repeats=result.requests > fresh)

        # Latency at a fixed offered rate, well under both servers' capacity: with 64
        # connections kept saturated, latency is only queueing (connections / req/s).
        paced_script = work / "paced.lua"
        delay_ms = round(args.connections * 1000 / args.rate)
        paced_script.write_text(PACED_SCRIPT % (tokens_file, delay_ms))
        paced: dict[str, list[WrkResult]] = {name: [] for name in servers}
        paced[COLD] = []
        for run in range(1, args.runs + 1):
            for name, (port, pid) in servers.items():
                with scraper.active(name == "shortlink"):
                    result = run_wrk(
                        f"http://127.0.0.1:{port}/",
                        paced_script,
                        args.seconds,
                        args.connections,
                        pid,
                    )
                paced[name].append(result)
                _show(f"paced run {run} {name}", result)
            # Cold first taps at the same offered rate: the lookup's own latency, not a queue.
            tokens = create_through_api(
                api_url, api_key, args.rate * args.seconds * 3 // 2, f"paced-cold{run}"
            )
            (work / f"paced-cold-{run}.txt").write_text("\n".join(tokens) + "\n")
            once = work / f"paced-once-{run}.lua"
            once.write_text(PACED_ONCE_SCRIPT % (work / f"paced-cold-{run}.txt", delay_ms))
            result = run_wrk(
                f"http://127.0.0.1:{cold_port}/", once, args.seconds, args.connections, cold.pid
            )
            paced[COLD].append(result)
            _show(f"paced run {run} {COLD}", result, repeats=result.requests > len(tokens))

        with urllib.request.urlopen(f"http://127.0.0.1:{real_port}/readyz") as r:
            readiness = r.read().decode()
        measured = Measurements(
            results=results,
            paced=paced,
            published=published,
            seed_seconds=seed_seconds,
            warm_seconds=warm_seconds,
            rss_cold=rss_cold,
            rss_warm=rss_warm,
            rss_after=rss_kib(real.pid),
            readiness=readiness,
            scrapes=scraper.scrapes,
            scraped_redirects=scraper.redirects,
            first=first,
            fresh_links=fresh_links,
            warm_after_create=warm_after_create,
            warm_within=warm_within,
            warm_rss_per_100k=statistics.median(warm_rss),
            broker_cpu=broker_cpu,
            smart=smart,
        )
        del base

    report = _report(args, measured)
    print(report)
    if not args.no_write:
        RESULTS_DOC.parent.mkdir(exist_ok=True)
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0


def _show(
    label: str, result: WrkResult, published: float | None = None, repeats: bool = False
) -> None:
    extra = "" if published is None else f"  clicks published {published:,.0f}/s"
    if repeats:
        extra += "  (ran out of fresh links: some taps were repeats)"
    print(
        f"{label}: {result.requests_per_second:,.0f} req/s  p50 {result.p50_ms:.2f} ms  "
        f"p99 {result.p99_ms:.2f} ms  errors {result.errors}  server CPU "
        f"{result.server_cpu:.0%} ({result.cpu_us_per_request:.0f} us/req){extra}",
        flush=True,
    )


def smart_ratio(smart: dict[str, list[WrkResult]]) -> str:
    """Links with four rules against plain links, round by round, and the median."""
    rates = [
        r.requests_per_second / p.requests_per_second
        for r, p in zip(smart[RULES_IPHONE], smart[PLAIN_IPHONE], strict=True)
    ]
    plain = statistics.median(r.requests_per_second for r in smart[PLAIN_IPHONE])
    ruled = statistics.median(r.requests_per_second for r in smart[RULES_IPHONE])
    return (
        f"{statistics.median(rates):.2f}x the req/s of plain links (runs "
        f"{', '.join(f'{x:.2f}' for x in rates)}; {ruled:,.0f} against {plain:,.0f} req/s)"
    )


def _report(args: argparse.Namespace, m: Measurements) -> str:
    def median(name: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in m.results[name]))

    def pairs(name: str, other: str) -> str:
        return ", ".join(
            f"{a.requests_per_second / b.requests_per_second:.2f}"
            for a, b in zip(m.results[name], m.results[other], strict=True)
        )

    real_rps = median("shortlink", "requests_per_second")
    base_rps = median("baseline", "requests_per_second")
    bare_rps = median(NO_METRICS, "requests_per_second")
    per_100k = (m.rss_warm - m.rss_cold) / 1024 / args.links * 100_000
    cold_rps = args.links / m.warm_seconds

    def against_baseline(runs: list[WrkResult]) -> str:
        """Throughput and p99 ratios to the baseline run of the same round, and medians."""
        rates = [
            r.requests_per_second / b.requests_per_second
            for r, b in zip(runs, m.results["baseline"], strict=True)
        ]
        tails = [r.p99_ms / b.p99_ms for r, b in zip(runs, m.results["baseline"], strict=True)]
        return (
            f"{statistics.median(rates):.2f}x the baseline's req/s (runs "
            f"{', '.join(f'{x:.2f}' for x in rates)}), p99 {statistics.median(tails):.2f}x its p99 "
            f"(runs {', '.join(f'{x:.2f}' for x in tails)})"
        )

    lines = [
        f"## `make bench`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`make bench` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}): servers on CPU {SERVER_CPU}, wrk, the broker and the "
        f"API on CPU {LOAD_CPU}; {args.links:,} links, {args.connections} connections, "
        f"{args.seconds} s per run, {args.runs} rounds, each running every series once in turn. "
        f"Medians below. Repeat taps: random tokens of the seeded links, all in the cache. "
        f"`{NO_METRICS}` is the same server started with REDIRECT_METRICS_PORT=0. First taps: "
        f"links created through the API just before each run ("
        f"{', '.join(f'{n:,}' for n in m.fresh_links)} per round: 1.5 times the round's fastest "
        f"repeat-tap run, so that no first tap is a repeat), each tapped "
        f"once; *warmed* on the server that reads created links into its cache, *cold* on one "
        f"started with WARM_ON_CREATE=false (every tap a lookup, batched).",
        "",
        "| series | req/s (runs) | median req/s | p50 ms | p99 ms | server CPU | CPU us/req "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = {**m.results, **m.first}
    for name, runs in rows.items():
        rates = ", ".join(f"{r.requests_per_second:,.0f}" for r in runs)
        lines.append(
            f"| {name} | {rates} | "
            f"{statistics.median(r.requests_per_second for r in runs):,.0f} | "
            f"{statistics.median(r.p50_ms for r in runs):.2f} | "
            f"{statistics.median(r.p99_ms for r in runs):.2f} | "
            f"{statistics.median(r.server_cpu for r in runs):.0%} | "
            f"{statistics.median(r.cpu_us_per_request for r in runs):.0f} | "
            f"{sum(r.errors for r in runs)} |"
        )
    cold_p99 = statistics.median(r.p99_ms for r in m.first[COLD])
    paced_cold = m.paced[COLD]
    lines += [
        "",
        f"- **repeat taps: {against_baseline(m.results['shortlink'])}** "
        "(target >= 1.0x, p99 <= 1.5x)",
        f"- **first taps, warmed: {against_baseline(m.first[WARMED])}** (target >= 0.9x, "
        "p99 <= 2x)",
        f"- **first taps, cold: {against_baseline(m.first[COLD])}; p99 {cold_p99:.2f} ms "
        f"at saturation, {statistics.median(r.p99_ms for r in paced_cold):.2f} ms at "
        f"{args.rate:,} req/s offered (runs "
        f"{', '.join(f'{r.p99_ms:.2f}' for r in paced_cold)})** (target >= 0.5x, p99 <= 10 ms; "
        "at saturation 64 connections wait in a queue whose length is 64 / req/s, so its p99 "
        "is mostly the machine's speed that day: compare the baseline's p99 in the same run)",
        f"- created links in the cache: within "
        f"{', '.join(f'{s:g}' for s in m.warm_within)} s of the notification (the worker's "
        f"histogram) for up to {min(max(m.fresh_links), CREATE_BATCH):,} links per request "
        "(target: within 1 s of the 201); "
        f"seen through the metrics {', '.join(f'{s:.2f}' for s in m.warm_after_create)} s "
        "after the API's last answer (metrics are written once a second)",
        f"- **memory: {m.warm_rss_per_100k:.1f} MiB per 100,000 links warmed** (RSS growth of "
        f"the warmed server while a run's links arrived, median), "
        f"{per_100k:.1f} MiB per 100,000 read by cold taps (the seeded links, each with a "
        "target URL and so a group of its own): "
        f"{2**30 / (max(m.warm_rss_per_100k, 0.1) * 2**20) * 100_000:,.0f} links per GiB "
        "(target <= 25 MiB)",
        f"- ratio shortlink / baseline on repeat taps: {real_rps / base_rps:.2f}x (median over "
        f"median); run by run: {pairs('shortlink', 'baseline')}",
        f"- metrics cost: shortlink with metrics / with REDIRECT_METRICS_PORT=0: "
        f"{real_rps / bare_rps:.2f}x req/s (run by run: {pairs('shortlink', NO_METRICS)}), "
        f"CPU per request {median('shortlink', 'cpu_us_per_request'):.0f} vs "
        f"{median(NO_METRICS, 'cpu_us_per_request'):.0f} us; the metrics server was scraped "
        f"every second during its runs ({m.scrapes} scrapes; the last counted "
        f"{m.scraped_redirects:,} redirects)",
        f"- clicks published to Kafka: {statistics.median(m.published):,.0f}/s (median of runs; "
        f"every redirect is one click)",
        f"- latency at a fixed {args.rate:,} req/s offered ({args.runs} runs of {args.seconds} s "
        "each, medians; p99 run by run in brackets): "
        + "; ".join(
            f"{name} p50 {statistics.median(r.p50_ms for r in runs):.2f} ms, p99 "
            f"{statistics.median(r.p99_ms for r in runs):.2f} ms "
            f"({', '.join(f'{r.p99_ms:.1f}' for r in runs)}), "
            f"{statistics.median(r.requests_per_second for r in runs):,.0f} req/s served"
            for name, runs in m.paced.items()
        ),
        f"- the broker (tansu, in memory, on the load core) used "
        f"{', '.join(f'{c:.0%}' for c in m.broker_cpu) or 'n/a'} of a core during the warmed "
        "first-tap runs (it slows as it fills; these shares show how much it took from wrk)",
        f"- cold reads of the {args.links:,} seeded links: {cold_rps:,.0f} req/s (64 "
        f"connections, one worker); seeding them took {m.seed_seconds:.1f} s",
        f"- **links with four rules: {smart_ratio(m.smart)}** (target >= 0.8x; the same "
        "server, iPhone taps that evaluate all four rules, against iPhone taps on plain links, "
        "alternating in each round)",
        f"- readiness after the runs: `{m.readiness}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
