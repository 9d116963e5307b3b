"""`make bench`: the redirect server against a bare aiohttp baseline, in one run.

Both servers run pinned to CPU 0; wrk (and the broker) run pinned to CPU 1.
The real server is one worker with 100,000 links seeded, its cache warmed by
requesting every link once, and click publishing on to a real broker. The
baseline is loadtests/baseline_app.py: a dict lookup and a 302. wrk uses 64
connections and random tokens from the seeded set, 10 s per run, 3 runs each,
alternating. The report (stdout and docs/benchmarks.md) gives req/s and p50/p99
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
import signal
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
import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from shortlink import accounts, schema
from shortlink.db import with_database
from shortlink.dev import embedded
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links

SERVER_CPU = "0"
LOAD_CPU = "1"
TOPIC = "bench-clicks"
NO_METRICS = "shortlink, metrics off"
SCRAPED_302 = re.compile(
    r'^shortlink_redirect_responses_total\{status="302"\} (\S+)$', re.MULTILINE
)
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DOC = ROOT / "docs" / "benchmarks.md"
WRK_SCRIPT = """
local tokens = {}
for line in io.lines("%s") do tokens[#tokens + 1] = line:match("^(%%S+)") end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  return wrk.format("GET", "/" .. tokens[math.random(#tokens)])
end
"""
# The same requests, each connection pausing between them: a fixed offered rate.
PACED_SCRIPT = (
    WRK_SCRIPT
    + """
delay = function() return %d end
"""
)


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu: float = 0.0  # share of one core the server used during the run

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu * 1e6 / self.requests_per_second


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_duration_ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    unit = re.sub(r"^[0-9.]+", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(url: str, script: Path, seconds: int, connections: int, server_pid: int) -> WrkResult:
    cpu_before, started = cpu_seconds(server_pid), time.monotonic()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = parse_wrk(out)
    result.server_cpu = (cpu_seconds(server_pid) - cpu_before) / (time.monotonic() - started)
    return result


def parse_wrk(out: str) -> WrkResult:
    """req/s, p50/p99, requests and errors (socket errors and non-2xx/3xx) of wrk's output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = sum(
        int(n)
        for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)
        + re.findall(r"Non-2xx or 3xx responses: (\d+)", out)
    )
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        p50_ms=parse_duration_ms(percentiles["50"]),
        p99_ms=parse_duration_ms(percentiles["99"]),
        requests=requests,
        errors=errors,
    )


def start_profiler(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording collapsed stacks of `pid` for `seconds` (needs root or ptrace rights)."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


@contextlib.contextmanager
def process(
    argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped (SIGTERM, then SIGKILL) on exit; with `log`, its stdout and
    stderr are appended to that file, else stdout is dropped and stderr inherited."""
    with contextlib.ExitStack() as files:
        output = files.enter_context(open(log, "ab")) if log is not None else None
        child = subprocess.Popen(
            argv,
            env=env,
            stdout=output or subprocess.DEVNULL,
            stderr=output,
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


async def seed(database_url: str, count: int) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        await schema.migrate(conn)
        account = await accounts.create_account(conn, "bench")
        specs = [
            NewLink(
                f"https://shop.example.com/offer?c=spring&r={i}",
                phone_number=f"4477{i:08d}",
                client_ref=f"msg-{i}",
                client_identifier="bench",
            )
            for i in range(count)
        ]
        created = await create_links(conn, account.account_id, specs)
    finally:
        await conn.close()
    return [(c.token, s.target_url) for c, s in zip(created, specs, strict=True)]


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
        server_url = os.environ.get("DATABASE_URL") or embedded.ensure_postgres(work)
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap is None:
            broker = embedded.Broker("127.0.0.1", embedded.free_port(), work / "tansu.log")
            broker.start()
            stack.callback(broker.stop)
            if broker.process is not None:  # the broker shares the load generator's core
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
        links = asyncio.run(seed(database_url, args.links))
        seed_seconds = time.perf_counter() - started
        tokens_file = work / "tokens.tsv"
        tokens_file.write_text("".join(f"{t}\t{u}\n" for t, u in links))
        script = work / "random.lua"
        script.write_text(WRK_SCRIPT % tokens_file)

        real_port, bare_port, base_port = (embedded.free_port() for _ in range(3))
        metrics_port = embedded.free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        python = sys.executable

        def redirect_server(port: int, metrics_port: int, spool: str) -> subprocess.Popen[bytes]:
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "CLICK_TOPIC": TOPIC,
                "SPOOL_DIR": str(work / spool),
                "LOG_LEVEL": "WARNING",
                "REDIRECT_METRICS_PORT": str(metrics_port),
            }
            argv = [python, "-m", "shortlink.cli", "redirect", "--workers", "1"]
            return stack.enter_context(
                process(["taskset", "-c", SERVER_CPU, *argv, "--port", str(port)], env)
            )

        real = redirect_server(real_port, metrics_port, "spool")
        bare = redirect_server(bare_port, 0, "spool-bare")
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
        wait_ready(f"http://127.0.0.1:{real_port}/readyz")
        wait_ready(f"http://127.0.0.1:{bare_port}/readyz")
        rss_cold = rss_kib(real.pid)
        print("warming the caches (every link once) ...", flush=True)
        warm_seconds = asyncio.run(warm(f"http://127.0.0.1:{real_port}", [t for t, _ in links]))
        rss_warm = rss_kib(real.pid)
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
        published: list[float] = []
        scraper = Scraper(metrics_url)
        for run in range(1, args.runs + 1):
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

        # Latency at a fixed offered rate, well under both servers' capacity: with 64
        # connections kept saturated, latency is only queueing (connections / req/s).
        paced_script = work / "paced.lua"
        paced_script.write_text(
            PACED_SCRIPT % (tokens_file, round(args.connections * 1000 / args.rate))
        )
        paced: dict[str, list[WrkResult]] = {name: [] for name in servers}
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
        )
        del base

    report = _report(args, measured)
    print(report)
    if not args.no_write:
        RESULTS_DOC.parent.mkdir(exist_ok=True)
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0


def _show(label: str, result: WrkResult, published: float | None = None) -> None:
    extra = "" if published is None else f"  clicks published {published:,.0f}/s"
    print(
        f"{label}: {result.requests_per_second:,.0f} req/s  p50 {result.p50_ms:.2f} ms  "
        f"p99 {result.p99_ms:.2f} ms  errors {result.errors}  server CPU "
        f"{result.server_cpu:.0%} ({result.cpu_us_per_request:.0f} us/req){extra}",
        flush=True,
    )


def create_database(server_url: str, name: str) -> str:
    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


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
    lines = [
        f"## Redirect benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`make bench` on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}): servers on CPU {SERVER_CPU}, wrk and the broker on CPU "
        f"{LOAD_CPU}; {args.links:,} links, {args.connections} connections, random tokens, "
        f"{args.seconds} s per run, {args.runs} runs each, alternating. Medians below. "
        f"`{NO_METRICS}` is the same server started with REDIRECT_METRICS_PORT=0.",
        "",
        "| server | req/s (runs) | median req/s | p50 ms | p99 ms | server CPU | CPU us/req "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in m.results:
        runs = ", ".join(f"{r.requests_per_second:,.0f}" for r in m.results[name])
        lines.append(
            f"| {name} | {runs} | {median(name, 'requests_per_second'):,.0f} | "
            f"{median(name, 'p50_ms'):.2f} | {median(name, 'p99_ms'):.2f} | "
            f"{median(name, 'server_cpu'):.0%} | {median(name, 'cpu_us_per_request'):.0f} | "
            f"{sum(r.errors for r in m.results[name])} |"
        )
    lines += [
        "",
        f"- **ratio shortlink / baseline: {real_rps / base_rps:.2f}x** (req/s, median over "
        f"median); run by run: {pairs('shortlink', 'baseline')}",
        f"- **metrics cost: shortlink with metrics / with REDIRECT_METRICS_PORT=0: "
        f"{real_rps / bare_rps:.2f}x** req/s (run by run: {pairs('shortlink', NO_METRICS)}), "
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
        f"- warm cache: RSS {m.rss_cold / 1024:.0f} MiB before warm-up, "
        f"{m.rss_warm / 1024:.0f} MiB with {args.links:,} links cached: {per_100k:.0f} MiB per "
        f"100,000 cached links; {m.rss_after / 1024:.0f} MiB after the runs",
        f"- cold cache (every link's first request reads PostgreSQL): {cold_rps:,.0f} req/s "
        f"during warm-up; seeding {args.links:,} links took {m.seed_seconds:.1f} s",
        f"- readiness after the runs: `{m.readiness}`",
        "",
    ]
    return "\n".join(lines)


def write_section(report: str) -> None:
    """Add a report to docs/benchmarks.md, newest first, keeping the history."""
    header = "# Benchmarks\n\nFigures from the project's own benchmark commands.\n\n"
    existing = RESULTS_DOC.read_text() if RESULTS_DOC.exists() else header
    body = existing[len(header) :] if existing.startswith(header) else existing
    RESULTS_DOC.write_text(header + report + "\n" + body)


if __name__ == "__main__":
    sys.exit(main())
