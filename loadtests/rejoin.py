"""`make rejoin`: how fast the forwarders' consumer group recovers from a member that
stops, dies, or dies and restarts, with each group membership setting, on the local broker.

A tansu broker on a free port, a 6-partition topic and a producer putting one record
on every partition every 50 ms. Each member is a process (`python -m
loadtests.rejoin member`) that consumes with the forwarder's own consumer settings
(forwarder.recorder.consumer_settings) and leaves the way the forwarder does
(forwarder.recorder.leave), printing the partitions it consumed from and when. Two
members share the group; once both consume, one of them is
- *restarted*: SIGKILLed and started again at once (under the same instance id when
  static);
- *stopped*: SIGTERMed (it leaves the group);
- *killed*: SIGKILLed for good;
and the report gives, per setting and fault, the longest time a partition was not
consumed (the stall) and when the restarted member consumed again. Settings: the
forwarder before it left the group itself (aiokafka's stop, 10 s session), dynamic and
static membership (FORWARDER_INSTANCE_ID), 1 to 10 s session timeouts (`--only NAME`,
repeatable, runs only the settings of those names). The table goes to
docs/benchmarks.md (section `make rejoin`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from forwarder.config import ForwarderConfig
from forwarder.recorder import consumer_settings, leave
from shortlink.dev import embedded
from shortlink.kafka import ensure_topic

from .results import RESULTS_DOC, ROOT, write_section

TOPIC = "rejoin"
PARTITIONS = 6
TICK = 0.05  # seconds between the producer's rounds (one record per partition)
SETTLE = 40.0  # seconds a fault's window lasts at most


@dataclass(frozen=True)
class Setting:
    name: str
    session_ms: int
    static: bool
    leaves: bool = True  # False: aiokafka's own stop (a static member does not leave)


SETTINGS = [
    Setting("before: dynamic, session 10 s, aiokafka's stop", 10_000, static=False, leaves=False),
    Setting("dynamic, session 6 s (the default)", 6_000, static=False),
    Setting("dynamic, session 3 s", 3_000, static=False),
    Setting("dynamic, session 2 s", 2_000, static=False),
    Setting("dynamic, session 1.5 s (local broker)", 1_500, static=False),
    Setting("dynamic, session 1 s", 1_000, static=False),
    Setting("static, session 6 s", 6_000, static=True),
    Setting("static, session 10 s", 10_000, static=True),
]
FAULTS = ("restarted", "stopped", "killed")


def member_main(argv: list[str]) -> int:
    """One member: print `joining <unix time>` when its imports are done and it joins the
    group, then consume, print `<unix time> <partition>...` per batch, leave on SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--session-ms", required=True)
    parser.add_argument("--instance")
    parser.add_argument("--no-leave", action="store_true")
    args = parser.parse_args(argv)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
        "CLICK_TOPIC": TOPIC,
        "FORWARDER_GROUP": args.group,
        "KAFKA_SESSION_TIMEOUT_MS": args.session_ms,
    }
    if args.instance:
        env["FORWARDER_INSTANCE_ID"] = args.instance
    config = ForwarderConfig.from_env(env)
    asyncio.run(_consume(config, leaves=not args.no_leave))
    return 0


async def _consume(config: ForwarderConfig, *, leaves: bool) -> None:
    consumer = AIOKafkaConsumer(**consumer_settings(config))
    consumer.subscribe([TOPIC])
    sys.stdout.write(f"joining {time.time():.3f}\n")
    sys.stdout.flush()
    await consumer.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            if batches:
                partitions = " ".join(str(tp.partition) for tp in batches)
                sys.stdout.write(f"{time.time():.3f} {partitions}\n")
                sys.stdout.flush()
                await consumer.commit()
    finally:
        await (leave(consumer) if leaves else consumer.stop())


@dataclass
class Member:
    name: str
    process: asyncio.subprocess.Process
    seen: list[tuple[float, int]] = field(default_factory=list)  # (time, partition)
    reader: asyncio.Task[None] | None = None
    joining: float | None = None  # when the process had started and began to join

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            at, *partitions = line.split()
            if at == b"joining":
                self.joining = float(partitions[0])
                continue
            self.seen.extend((float(at), int(p)) for p in partitions)


@dataclass(frozen=True)
class Result:
    setting: str
    fault: str
    stall: float  # longest time a partition was not consumed, from the fault on
    back: float | None  # when the restarted member consumed again, after the kill
    recovered: bool
    startup: float | None = None  # when the restarted process began to join, after the kill


class Group:
    """The members of one run, started and stopped by this process."""

    def __init__(self, bootstrap: str, group: str, setting: Setting) -> None:
        self.bootstrap, self.group, self.setting = bootstrap, group, setting
        self.members: list[Member] = []

    async def start(self, name: str) -> Member:
        argv = [
            sys.executable,
            "-m",
            "loadtests.rejoin",
            "member",
            "--bootstrap",
            self.bootstrap,
            "--group",
            self.group,
            "--session-ms",
            str(self.setting.session_ms),
        ]
        if self.setting.static:
            argv += ["--instance", name]
        if not self.setting.leaves:
            argv.append("--no-leave")
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        member = Member(name, process)
        member.reader = asyncio.create_task(member.read())
        self.members.append(member)
        return member

    async def close(self) -> None:
        for member in self.members:
            if member.process.returncode is None:
                member.process.kill()
            await member.process.wait()
            if member.reader is not None:
                member.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await member.reader

    def consumed(self) -> list[tuple[float, int]]:
        return sorted(seen for member in self.members for seen in member.seen)


async def produce(bootstrap: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        while not stop.is_set():
            for partition in range(PARTITIONS):
                await producer.send(TOPIC, b"x", partition=partition)
            await asyncio.sleep(TICK)
    finally:
        await producer.stop()


def all_recent(consumed: list[tuple[float, int]], since: float) -> bool:
    return {p for at, p in consumed if at >= since} == set(range(PARTITIONS))


async def wait_for(condition: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return False


async def one(bootstrap: str, setting: Setting, fault: str, run: int) -> Result:
    """Two members; once both consume, the fault; how long the partitions stall."""
    group = Group(bootstrap, f"rejoin-{os.getpid()}-{run}", setting)
    try:
        first = await group.start("forwarder-0")
        second = await group.start("forwarder-1")
        settled = await wait_for(
            lambda: (
                first.seen
                and second.seen
                and first.seen[-1][0] > time.time() - 0.5
                and second.seen[-1][0] > time.time() - 0.5
                and all_recent(group.consumed(), time.time() - 0.5)
            ),
            60,
        )
        if not settled:
            raise RuntimeError(f"{setting.name}: the group did not settle")
        await asyncio.sleep(1.0)
        began = time.time()
        if fault == "stopped":
            second.process.send_signal(signal.SIGTERM)
        else:
            second.process.kill()
        await second.process.wait()
        again = await group.start("forwarder-1") if fault == "restarted" else None
        # Every partition consumed again lately, by a member alive after the fault, and a
        # restarted member consuming too: when it joins after the others took over, its
        # join is one more rebalance, and that stall counts.
        recovered = await wait_for(
            lambda: (
                all_recent(group.consumed(), max(time.time() - 0.3, began + 0.1))
                and (again is None or bool(again.seen))
            ),
            SETTLE,
        )
        if recovered:
            await asyncio.sleep(1.0)
        last: dict[int, float] = {}
        stall = 0.0
        for at, partition in group.consumed():
            if at < began - 1:
                continue
            stall = max(stall, at - last.get(partition, began))
            last[partition] = at
        end = time.time()
        stall = max([stall, *(end - last.get(p, began) for p in range(PARTITIONS))])
        back = again.seen[0][0] - began if again is not None and again.seen else None
        startup = again.joining - began if again is not None and again.joining else None
        return Result(setting.name, fault, stall, back, recovered, startup)
    finally:
        await group.close()


async def measure(repeats: int, only: list[str] | None = None) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="shortlink-rejoin-") as work:
        broker = embedded.Broker("127.0.0.1", embedded.free_port(), Path(work) / "tansu.log")
        broker.start()
        try:
            await ensure_topic(broker.bootstrap_servers, TOPIC, PARTITIONS)
            stop = asyncio.Event()
            producer = asyncio.create_task(produce(broker.bootstrap_servers, stop))
            results = []
            try:
                run = 0
                for setting in SETTINGS:
                    if only and setting.name not in only:
                        continue
                    for fault in FAULTS:
                        for _ in range(repeats):
                            run += 1
                            result = await one(broker.bootstrap_servers, setting, fault, run)
                            print(_row(result), flush=True)
                            results.append(result)
            finally:
                stop.set()
                await producer
            return results
        finally:
            broker.stop()


def _row(result: Result) -> str:
    back = "" if result.back is None else f"{result.back:.1f} s"
    if result.back is not None and result.startup is not None:
        back += f" ({result.back - result.startup:.1f} s after its start-up)"
    stall = f"{result.stall:.1f} s" + ("" if result.recovered else f" (not within {SETTLE:.0f} s)")
    return f"| {result.setting} | {result.fault} | {stall} | {back} |"


def render(results: list[Result], repeats: int) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## `make rejoin`, {when}",
        "",
        f"Two forwarder consumers (forwarder.recorder.consumer_settings) on a {PARTITIONS}-"
        f"partition topic of the local tansu broker, fed one record per partition every "
        f"{TICK * 1000:.0f} ms; one member restarted (SIGKILL, started again at once), "
        "stopped (SIGTERM) or killed (SIGKILL). *Stall*: the longest time any partition was "
        "not consumed from the fault on; *back*: when the restarted member consumed again "
        "(and how long after its process had started and began to join). "
        f"{repeats} run(s) each, in order.",
        "",
        "| setting | fault | stall | back |",
        "|---|---|---|---|",
        *(_row(result) for result in results),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    if sys.argv[1:2] == ["member"]:
        return member_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument("--only", action="append", help="only the setting of this name")
    args = parser.parse_args()
    results = asyncio.run(measure(args.repeats, args.only))
    report = render(results, args.repeats)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"written to {RESULTS_DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
