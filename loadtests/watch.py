"""What the services say during `make chaos`: health, metrics, worker pids, log lines.

A `Watcher` polls every half second, while the load runs, the redirect server's
and the forwarder's /healthz and /readyz, both metrics pages, and the redirect
supervisor's worker processes, keeping a timeline. `read_logs` turns the
services' JSON log files (and the PostgreSQL log) into timed entries, warnings
and worse only, with tracebacks that are not JSON kept as one entry each. The
report groups both by fault window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

# The supervision helper's log lines and metrics (shortlink/supervise.py), when present.
TASK_RESTARTED = "background task failed; restarting it"
TASK_DEAD = "background task keeps failing; this process cannot recover"
RESTART_METRICS = ("shortlink_redirect_task_restarts_total", "forwarder_task_restarts_total")
_PG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+) \[\d+\] (ERROR|FATAL|PANIC|WARNING):\s+(.*)$"
)
# The last line of a traceback: "TypeError: ..." or "aiohttp.http_exceptions.LineTooLong: ...".
_EXCEPTION_LINE = re.compile(
    r"^((?:[a-z_]\w*\.)+[A-Z]\w*|[A-Z]\w*(?:Error|Exception|Exit|Interrupt))(?::\s?(.*))?$"
)
_ERROR_CLASS = re.compile(r"^([A-Za-z_][\w.]*)\(")


@dataclass
class Sample:
    at: float
    healthz: dict[str, int]  # service -> HTTP status (0: no answer)
    readyz: dict[str, tuple[int, str]]  # service -> (status, body)
    metrics: dict[str, dict[str, float]]  # service -> sample name with labels -> value
    workers: list[int]


@dataclass
class Watcher:
    redirect_url: str
    redirect_metrics_url: str
    forwarder_url: str
    supervisor_pid: int
    samples: list[Sample] = field(default_factory=list)

    async def run(self, until: float, interval: float = 0.5) -> None:
        # Longer than the services' own 1 s probe timeouts, so their answer is seen.
        timeout = aiohttp.ClientTimeout(total=2.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.time() < until:
                started = time.monotonic()
                self.samples.append(await self.sample(session))
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def sample(self, session: aiohttp.ClientSession) -> Sample:
        urls = {"redirect": self.redirect_url, "forwarder": self.forwarder_url}
        probes = {
            **{(name, "healthz"): f"{url}/healthz" for name, url in urls.items()},
            **{(name, "readyz"): f"{url}/readyz" for name, url in urls.items()},
            ("redirect", "metrics"): self.redirect_metrics_url,
            ("forwarder", "metrics"): f"{self.forwarder_url}/metrics",
        }
        at = time.time()
        found = await asyncio.gather(*(_answer(session, url) for url in probes.values()))
        answers = dict(zip(probes, found, strict=True))
        return Sample(
            at,
            healthz={name: answers[name, "healthz"][0] for name in urls},
            readyz={name: answers[name, "readyz"] for name in urls},
            metrics={name: parse_metrics(answers[name, "metrics"][1]) for name in urls},
            workers=worker_pids(self.supervisor_pid),
        )


async def _answer(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as response:
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{label="v"}': value}; {} if it does not parse."""
    found: dict[str, float] = {}
    with contextlib.suppress(ValueError, IndexError, TypeError):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def worker_pids(supervisor: int) -> list[int]:
    """The redirect workers: the supervisor's children started by multiprocessing spawn."""
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        return []
    found = []
    for pid in children:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
    return sorted(found)


@dataclass(frozen=True)
class LogEntry:
    at: float | None  # Unix time, None when the line carries none
    service: str
    level: str
    message: str  # message, with the error's class when there is one

    @property
    def key(self) -> str:
        return f"{self.service}: {self.message}"


def read_logs(logs: dict[str, Path]) -> list[LogEntry]:
    """Warnings and worse from the services' JSON logs and PostgreSQL's log."""
    entries: list[LogEntry] = []
    for service, path in logs.items():
        if not path.exists():
            continue
        lines = path.read_text(errors="replace").splitlines()
        if service == "postgres":
            entries += _postgres_entries(lines)
        else:
            entries += _service_entries(service, lines)
    return entries


def _service_entries(service: str, lines: list[str]) -> list[LogEntry]:
    found: list[LogEntry] = []
    last_time: float | None = None
    in_traceback = False
    for line in lines:
        if line.startswith("{"):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            last_time = datetime.fromisoformat(entry["time"]).timestamp()
            in_traceback = False
            if entry.get("level") in ("warning", "error", "critical"):
                message = str(entry.get("message"))
                error = _ERROR_CLASS.match(str(entry.get("error", "")))
                if error:
                    message += f" ({error[1]})"
                elif "exception" in entry:
                    raised = [
                        m[1]
                        for line in str(entry["exception"]).splitlines()
                        if (m := _EXCEPTION_LINE.match(line))
                    ]
                    message += f" ({raised[-1]})" if raised else ""
                found.append(LogEntry(last_time, service, entry["level"], message))
        elif line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and (match := _EXCEPTION_LINE.match(line)):
            # An uncaught exception printed by Python, not logged: time of the line before.
            found.append(
                LogEntry(
                    last_time, service, "traceback", f"uncaught {match[1]}: {match[2] or ''}"[:90]
                )
            )
            in_traceback = False
    return found


def _postgres_entries(lines: list[str]) -> list[LogEntry]:
    found = []
    for line in lines:
        match = _PG_LINE.match(line)
        if match is None:
            continue
        stamp, level, message = match.groups()
        naive = datetime.strptime(stamp.rsplit(" ", 1)[0], "%Y-%m-%d %H:%M:%S.%f")
        # log_timezone is the machine's at initdb: UTC here; anything else is read as local.
        utc = stamp.endswith((" UTC", " GMT"))
        at_utc = naive.replace(tzinfo=UTC).timestamp() if utc else naive.timestamp()
        found.append(LogEntry(at_utc, "postgres", level.lower(), message[:90]))
    return found


def summarise(entries: list[LogEntry], start: float, end: float, limit: int = 8) -> list[str]:
    """The most frequent log messages between start and end, as 'service: message xN';
    the services' own before PostgreSQL's."""
    counts = Counter(e.key for e in entries if e.at is not None and start <= e.at < end)
    ranked = sorted(counts.items(), key=lambda kv: (kv[0].startswith("postgres:"), -kv[1]))
    return [f"{key} x{n}" if n > 1 else key for key, n in ranked[:limit]]


def longest_flat(samples: list[Sample], service: str, name: str, start: float, end: float) -> float:
    """The longest time a counter did not grow between start and end (while load ran)."""
    points = [(s.at, s.metrics.get(service, {}).get(name)) for s in samples if start <= s.at <= end]
    longest, since, last = 0.0, None, None
    for at, value in points:
        if value is None:
            continue
        if last is None or value != last:
            since, last = at, value
        elif since is not None:
            longest = max(longest, at - since)
    return longest


def counted(samples: list[Sample], service: str, name: str) -> float | None:
    """How much a counter grew over the samples, from 0 at the process's start, across
    restarts (a value below the last one is a new process counting from 0); None if no
    sample had it."""
    total, last = 0.0, None
    for sample in samples:
        value = sample.metrics.get(service, {}).get(name)
        if value is None:
            continue
        total += value - last if last is not None and value >= last else value
        last = value
    return total if last is not None else None


def failing(samples: list[Sample], start: float, end: float) -> dict[str, float]:
    """Seconds each probe was failing (healthz or readyz not 200, with what readyz said)
    between start and end, and how long the redirect server said it was spooling clicks."""
    spent: dict[str, float] = {}
    window = [s for s in samples if start <= s.at < end]
    for before, after in itertools.pairwise(window):
        bad = [
            f"{name} /healthz {status or 'no answer'}"
            for name, status in before.healthz.items()
            if status != 200
        ]
        bad += [
            f"{name} /readyz {_not_ready(status, body)}"
            for name, (status, body) in before.readyz.items()
            if status != 200
        ]
        if '"spooling":true' in before.readyz.get("redirect", (0, ""))[1]:
            bad.append("redirect spooling")
        for probe in bad:
            spent[probe] = spent.get(probe, 0.0) + after.at - before.at
    return spent


def _not_ready(status: int, body: str) -> str:
    """'503 (consumer not started)': the parts of a readyz answer that are not fine."""
    if not status:
        return "no answer"
    try:
        parts = orjson.loads(body)
    except orjson.JSONDecodeError:
        return str(status)
    wrong = [f"{k} {v}" for k, v in parts.items() if v not in ("ok", False)] if parts else []
    return f"{status} ({', '.join(wrong)})" if wrong else str(status)
