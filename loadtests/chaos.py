"""`make chaos`: the whole stack under steady paced taps while faults are injected in turn.

The stack is the real processes, as `make bench-system` runs them, on free
ports: the embedded PostgreSQL (its own, in a temporary folder: it gets
restarted), a tansu broker, `shortlink redirect --workers 2` (a supervisor and
two workers), one forwarder, and the contract-checking sink as the customer's
endpoint. Taps: paced wrk with a phone's User-Agent on links cached in both
workers (*repeat taps*), a tenth on links never tapped before (*first taps*,
each once: from the cache if links reach it when created, else read from
PostgreSQL), and 1 % *malformed taps* over raw sockets
(loadtests/taps.py). After a quiet start, hostile traffic, then one fault
after another (loadtests/faults.py):

1. hostile traffic (loadtests/hostile.py): taps with made-up browsers of up to
   3,000 letters, random header bytes, odd methods and paths, on the same
   links; and hostile requests to `shortlink api` (started for this), each a
   few times (first: its window keeps its planned place whatever the faults'
   recoveries take);
2. the broker paused (SIGSTOP, then SIGCONT);
3. PostgreSQL restarted (fast shutdown, start) while a forwarder transaction is
   parked mid-way on a row lock;
4. PostgreSQL read-only for a few seconds (a failover, simulated with
   default_transaction_read_only);
5. the customer endpoint answering 500, then holding requests 11 s (past the
   10 s delivery timeout), then resetting connections;
6. the forwarder SIGKILLed and started again (after the endpoint's faults: the
   killed process's endpoint lease holds deliveries back for up to a minute,
   which would hide them);
7. one redirect worker SIGTERMed (its supervisor restarts it).

Each window runs from its fault's start to the next one's. For each: the
answers by status, how long until every tap was a 302 again, and when the
clicks tapped during the fault were recorded (PostgreSQL commit timestamps) and
delivered (the sink's arrival times); what the services logged and their
health probes said (loadtests/watch.py). At the end, once the pipeline has
drained: 302s answered = clicks recorded = clicks delivered (a redelivery with
the same RequestIdentifier counted apart), 0 5xx on taps and from the API, every
API request answered within its timeout, 0 dead events, 0 dead tasks.
Exit 1 when the target is missed. Everything it starts, it stops. The tables
go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shortlink import clickevent

from . import faults, hostile
from .bench_system import FIRST_TAPS, RANDOM_TAPS
from .chaos_report import FIRST, HOSTILE, MALFORMED, REPEAT, Outcome, Setting, Window, render
from .results import RESULTS_DOC, ROOT, write_section
from .system import TOPIC, WARM_LINKS, Stack, alive, start_stack
from .taps import Tally, malformed_taps, start_wrk, wrk_script
from .watch import Watcher, read_logs, worker_pids

# Logs, per-second counts and probe samples of the last run, kept for reading.
ARTEFACTS = ROOT / "loadtests" / "results" / "chaos"


@dataclass(frozen=True)
class Plan:
    """How long each fault lasts (seconds) and a guess at the instantaneous ones."""

    baseline: float
    broker: float
    read_only: float
    endpoint: tuple[float, float, float]  # 500, 11 s sleeps, resets
    hostile: float
    restart_guess: float = 3.0
    kill_guess: float = 5.0
    worker_guess: float = 3.0

    @property
    def busy(self) -> float:
        return (
            self.baseline
            + self.broker
            + self.restart_guess
            + self.read_only
            + self.kill_guess
            + self.worker_guess
            + sum(self.endpoint)
            + self.hostile
        )


# The hostile window spreads its API rounds over its length; its 5,000-recipient message,
# sent once, took 4 s idle and 11-14 s under this load while its answer was built in full.
FULL = Plan(baseline=10, broker=20, read_only=5, endpoint=(10, 12, 20), hostile=30)
QUICK = Plan(baseline=5, broker=5, read_only=3, endpoint=(3, 3, 5), hostile=15)
FAULTS = 7
MIN_GAP = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1_000, help="taps/s, all kinds together")
    parser.add_argument("--seconds", type=int, help="load duration (default 190, quick 90)")
    parser.add_argument("--quick", action="store_true", help="shorter faults, for iterating")
    parser.add_argument("--first-share", type=float, default=0.10)
    parser.add_argument("--malformed-share", type=float, default=0.01)
    parser.add_argument(
        "--hostile-rate", type=float, default=150, help="hostile taps/s in their window"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    seconds = args.seconds or (90 if args.quick else 190)
    gap = (seconds - plan.busy) / FAULTS
    if gap < MIN_GAP:
        sys.stderr.write(f"--seconds must be at least {plan.busy + FAULTS * MIN_GAP:.0f}\n")
        return 2
    load_before = os.getloadavg()[0]
    try:
        outcome = run(args, plan, seconds, gap)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; everything started was stopped\n")
        return 130
    setting = Setting(
        mode="quick" if args.quick else "full",
        rate=args.rate,
        seconds=seconds,
        first_share=args.first_share,
        malformed_share=args.malformed_share,
        hostile_rate=args.hostile_rate,
        warm_links=WARM_LINKS,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    report, passed = render(setting, outcome)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0 if passed else 1


def run(args: argparse.Namespace, plan: Plan, seconds: int, gap: float) -> Outcome:
    """Start the system, exercise it, read what it logged; everything stops on the way out."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-chaos-")))
        stack.callback(keep_artefacts, work)  # runs once everything below has stopped
        fresh_links = int(args.rate * args.first_share * seconds * 1.2) + 100
        running = start_stack(stack, work, fresh_links)
        outcome = asyncio.run(exercise(running, args, plan, seconds, gap))
        outcome.logs = read_logs(running.logs)
        outcome.alive = {
            "redirect supervisor": alive(running.supervisor_pid),
            "2 redirect workers": len(worker_pids(running.supervisor_pid)) == 2,
            "forwarder": alive(running.forwarder_pid()),
            "API": alive(running.api_pid),
        }
    return outcome


async def exercise(
    running: Stack, args: argparse.Namespace, plan: Plan, seconds: int, gap: float
) -> Outcome:
    """Taps, faults, drain; everything measured."""
    work = running.work
    (work / "repeat.txt").write_text("\n".join(running.warm) + "\n")
    (work / "first.txt").write_text("\n".join(running.fresh) + "\n")
    start = int(time.time()) + 2
    stop_at = start + seconds
    shares = {FIRST: args.first_share, MALFORMED: args.malformed_share}
    rates = {
        REPEAT: round(args.rate * (1 - shares[FIRST] - shares[MALFORMED])),
        FIRST: round(args.rate * shares[FIRST]),
    }
    bodies = {REPEAT: RANDOM_TAPS, FIRST: FIRST_TAPS}
    files = {REPEAT: work / "repeat.txt", FIRST: work / "first.txt"}
    scripts = {
        name: wrk_script(work, name.replace(" ", "-"), bodies[name], files[name], rate, stop_at)
        for name, rate in rates.items()
        if rate > 0
    }
    baseline = await _count_clicks(running.database_url)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{running.sink_url}/reset"):
            pass
    watcher = Watcher(
        running.redirect_url,
        running.redirect_metrics_url,
        running.forwarder_url,
        running.supervisor_pid,
    )
    malformed = malformed_taps(running.redirect_port, running.warm, args.rate * shares[MALFORMED])
    hostility = hostile.Hostile(
        hostile.hostile_taps(running.redirect_port, running.warm, args.hostile_rate),
        running.api_port,
        hostile.api_requests(running.hostile_key, running.hostile_token, hostile.CAMPAIGN),
    )
    await asyncio.sleep(max(0.0, start - time.time()))
    print(f"tapping at {args.rate:,}/s for {seconds} s: {rates} + malformed", flush=True)
    runs = [
        await start_wrk(name, running.redirect_url, script, connections, seconds)
        for name, (script, connections) in scripts.items()
    ]
    background = [
        asyncio.create_task(malformed.run(stop_at), name="malformed taps"),
        asyncio.create_task(watcher.run(until=float("inf")), name="watcher"),
    ]
    try:
        windows = await inject(running, plan, start, gap, hostility)
        finished = {run.name: await run.finish() for run in runs}
        await background[0]
        for window, after in zip(windows, [*windows[1:], None], strict=True):
            window.end = after.start if after is not None else stop_at
        tallies = {name: tally for name, (_, _, tally) in finished.items()}
        tallies[MALFORMED] = malformed.tally
        tallies[HOSTILE] = hostility.taps.tally
        answered = sum(t.total()[302] for t in tallies.values())
        print(f"taps done: {answered:,} answered 302; waiting for the pipeline ...", flush=True)
        drain_started = time.monotonic()
        await drain(running, baseline, answered, 150 if seconds > 100 else 60)
        drain_seconds = time.monotonic() - drain_started
    finally:
        for task in background:
            task.cancel()
        ended = await asyncio.gather(*background, return_exceptions=True)
        for run in runs:
            if run.process.returncode is None:
                run.process.kill()
                await run.process.wait()
    for task, result in zip(background, ended, strict=True):
        if isinstance(result, Exception):  # the watcher failed: its samples would be short
            raise RuntimeError(f"{task.get_name()} failed") from result
    async with aiohttp.ClientSession() as session:
        watcher.samples.append(await watcher.sample(session))
        async with session.get(f"{running.sink_url}/stats") as r:
            sink = await r.json()
        async with session.get(f"{running.sink_url}/arrivals") as r:
            arrivals = [(int(ms), float(at)) for ms, at in orjson.loads(await r.read())]
    (work / "samples.json").write_bytes(orjson.dumps([asdict(s) for s in watcher.samples]))
    (work / "windows.json").write_bytes(orjson.dumps([asdict(w) for w in windows]))
    clicks = await _clicks_since(running.database_url, start)
    (work / "seconds.json").write_bytes(orjson.dumps(per_second(tallies, clicks)))
    census = await _topic_census(running)
    (work / "topic.json").write_bytes(orjson.dumps(census))
    print(f"topic census: {census}", flush=True)
    gaps = await _first_tap_gaps(running.database_url, running.fresh)
    (work / "first-tap-gaps.json").write_bytes(orjson.dumps(gaps))
    if gaps:
        print(f"first-tap links with no click between two tapped ones: {gaps}", flush=True)
    return Outcome(
        windows=windows,
        tallies=tallies,
        wrk={name: (result, errors) for name, (result, errors, _) in finished.items()},
        by_variant=malformed.by_variant,
        hostile_by_variant=hostility.taps.by_variant,
        api=hostility.answers,
        breakdown=await _breakdown_rows(running.database_url),
        samples=watcher.samples,
        clicks=clicks,
        arrivals=arrivals,
        sink=sink,
        drain_seconds=drain_seconds,
    )


async def inject(
    running: Stack, plan: Plan, start: float, gap: float, hostility: hostile.Hostile
) -> list[Window]:
    """The faults, in turn, each at its planned second (or as soon as the last is done)."""
    windows = [Window("steady", start, start, "no fault", fault=False)]
    steps: list[tuple[str, float, Callable[[], Awaitable[faults.Injected]]]] = [
        ("hostile traffic", plan.hostile, lambda: hostility.run(plan.hostile)),
        (
            "broker paused",
            plan.broker,
            lambda: faults.pause(running.broker_pid, plan.broker, "tansu broker"),
        ),
        (
            "PostgreSQL restarted",
            plan.restart_guess,
            lambda: faults.restart_mid_transaction(running.postgres, running.account_id),
        ),
        (
            "PostgreSQL read-only",
            plan.read_only,
            lambda: faults.read_only(running.postgres, plan.read_only),
        ),
        (
            "endpoint failing",
            sum(plan.endpoint),
            lambda: faults.endpoint_modes(
                running.sink_url, list(zip(("fail", "slow", "reset"), plan.endpoint, strict=True))
            ),
        ),
        (
            "forwarder killed",
            plan.kill_guess,
            lambda: faults.kill_and_restart(
                running.forwarder_pid(),
                running.restart_forwarder,
                f"{running.forwarder_url}/readyz",
            ),
        ),
        (
            "redirect worker stopped",
            plan.worker_guess,
            lambda: faults.terminate_worker(lambda: worker_pids(running.supervisor_pid)),
        ),
    ]
    due = start + plan.baseline
    for name, lasts, action in steps:
        await asyncio.sleep(max(0.0, due - time.time()))
        print(f"  +{time.time() - start:5.1f} s  {name} ...", flush=True)
        done = await action()
        windows.append(Window(name, done.began, done.ended, done.note))
        print(f"           {done.note}", flush=True)
        due += lasts + gap
    return windows


async def drain(running: Stack, baseline: tuple[int, int], answered: int, most: float) -> None:
    """Until every 302 is recorded and every human click delivered, or nothing moves for
    75 s (longer than a dead forwarder's endpoint lease) with no delivery waiting for a
    retry, or `most` seconds have passed."""
    started = last_change = time.monotonic()
    last: tuple[int, ...] = ()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() - started < most:
            total, humans = await _count_clicks(running.database_url)
            async with session.get(f"{running.sink_url}/stats") as r:
                stats = await r.json()
            recorded = total - baseline[0]
            if recorded >= answered and stats["distinct_clicks"] >= humans - baseline[1]:
                return
            now = (recorded, stats["posts"], sum(stats["refused"].values()))
            if now != last:
                last, last_change = now, time.monotonic()
            elif time.monotonic() - last_change >= 75 and not await _retrying(session, running):
                return
            await asyncio.sleep(1.0)


async def _retrying(session: aiohttp.ClientSession, running: Stack) -> bool:
    try:
        async with session.get(f"{running.forwarder_url}/metrics") as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return False
    for line in text.splitlines():
        if line.startswith("forwarder_retry_queue "):
            return float(line.split()[1]) > 0
    return False


def per_second(
    tallies: dict[str, Tally], clicks: list[tuple[float, float | None, bool]]
) -> list[tuple[int, int, int, int]]:
    """Second by second: 302s answered, clicks recorded (by clicked_at) and the running
    difference, which steps down for good in the second a click was lost (it wavers by a
    few where answers and clicks fall either side of a second's edge)."""
    answered: Counter[int] = Counter()
    for tally in tallies.values():
        for (second, status), n in tally.answers.items():
            if status == 302:
                answered[second] += n
    recorded = Counter(int(clicked_at) for clicked_at, _, _ in clicks)
    rows, balance = [], 0
    for second in sorted(answered.keys() | recorded.keys()):
        balance += recorded[second] - answered[second]
        rows.append((second, answered[second], recorded[second], balance))
    return rows


async def _topic_census(running: Stack) -> dict[str, Any]:
    """The click topic read whole, against the clicks table: records, distinct event ids,
    and those ids that are on the topic but not recorded (the consumer skipped them) or
    recorded but not on the topic (cannot be). Tells a click never published from one
    never consumed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=running.bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    ids: set[str] = set()
    records = 0
    try:
        await consumer.topics()  # metadata, so the topic's partitions are known
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for record in batch:
                    records += 1
                    with contextlib.suppress(Exception):
                        ids.add(clickevent.decode(record.value).event_id)
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(running.database_url)
    try:
        recorded = {str(row[0]) for row in await conn.fetch("SELECT event_id FROM clicks")}
    finally:
        await conn.close()
    return {
        "records": records,
        "distinct": len(ids),
        "recorded": len(recorded),
        "on_topic_not_recorded": sorted(ids - recorded)[:50],
        "recorded_not_on_topic": len(recorded - ids),
        "ends": {str(tp.partition): end for tp, end in ends.items()},
    }


async def _first_tap_gaps(database_url: str, fresh: list[str]) -> list[tuple[str, float, float]]:
    """First-tap links with no click although the links before and after them in the taps
    file have one: each names a click answered and lost, with its neighbours' click times
    (wrk taps the file in order, each link once; the untapped rest is one run at the end)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT l.token, min(extract(epoch FROM c.clicked_at))::float8 AS at
            FROM links l LEFT JOIN clicks c ON c.link_id = l.id
            WHERE l.token = ANY($1::text[]) GROUP BY l.token
            """,
            fresh,
        )
    finally:
        await conn.close()
    at = {row["token"]: row["at"] for row in rows}
    times = [at.get(token) for token in fresh]
    return [
        (fresh[i], before, after)
        for i in range(1, len(fresh) - 1)
        if times[i] is None
        and (before := times[i - 1]) is not None
        and (after := times[i + 1]) is not None
    ]


async def _count_clicks(database_url: str) -> tuple[int, int]:
    """All clicks recorded, and those by people (not bots)."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT count(*), count(*) FILTER (WHERE NOT is_bot) FROM clicks")
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


async def _clicks_since(database_url: str, start: float) -> list[tuple[float, float | None, bool]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """
            SELECT extract(epoch FROM clicked_at)::float8,
                   extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8, is_bot
            FROM clicks WHERE clicked_at >= to_timestamp($1)
            """,
            start - 1,
        )
    finally:
        await conn.close()
    return [(row[0], row[1], row[2]) for row in rows]


async def _breakdown_rows(database_url: str) -> dict[str, int]:
    """Rows the bench campaign's breakdown keeps per dimension (capped: counters.VALUES_KEPT)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT dimension, count(*) FROM campaign_breakdown WHERE campaign = 'bench'"
            " GROUP BY dimension ORDER BY dimension"
        )
    finally:
        await conn.close()
    return {row[0]: int(row[1]) for row in rows}


def keep_artefacts(work: Path) -> None:
    """Copy the run's logs, per-second counts and probe samples to ARTEFACTS."""
    shutil.rmtree(ARTEFACTS, ignore_errors=True)
    ARTEFACTS.mkdir(parents=True)
    for pattern in ("*.log", "*.counts", "*.json", "postgres/log"):
        for path in work.glob(pattern):
            shutil.copy(path, ARTEFACTS / (path.name if path.name != "log" else "postgres.log"))
    print(f"logs and counts of the run kept in {ARTEFACTS.relative_to(ROOT)}/", flush=True)


if __name__ == "__main__":
    sys.exit(main())
