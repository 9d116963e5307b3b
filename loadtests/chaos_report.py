"""The report of `make chaos`: what one run measured, as the docs section's tables.

A run is a list of windows (a fault's start to the next one's), the taps'
answers by second (loadtests/taps.py), the hostile taps by variant and the API's
answers by request (loadtests/hostile.py), every click's tap and commit times
from PostgreSQL, every delivery's arrival at the sink, and what the services
said (loadtests/watch.py). `render` turns that into the section written to
docs/benchmarks.md and says whether the target was met.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shortlink.campaigns.counters import VALUES_KEPT

from .hostile import API_ROUNDS, TAP_VARIANTS, ApiAnswers
from .results import ROOT
from .taps import NO_ANSWER, VARIANTS, Tally
from .watch import (
    RESTART_METRICS,
    TASK_DEAD,
    TASK_RESTARTED,
    LogEntry,
    Sample,
    counted,
    failing,
    longest_flat,
    summarise,
)
from .wrk import WrkResult

REPEAT, FIRST, MALFORMED, HOSTILE = "repeat taps", "first taps", "malformed taps", "hostile taps"
TAP_KINDS = (REPEAT, FIRST, MALFORMED, HOSTILE)
DEAD_EVENTS = "forwarder_dead_events_total"
HOLES = "forwarder_offset_holes_total"


@dataclass(frozen=True)
class Setting:
    """What was offered, for the report's first paragraph."""

    mode: str
    rate: int
    seconds: int
    first_share: float
    malformed_share: float
    hostile_rate: float
    warm_links: int
    load_before: float
    load_after: float


@dataclass
class Window:
    name: str
    start: float  # when the fault began
    removed: float  # when it ended (the same moment for a kill)
    note: str
    end: float = 0.0  # when the next fault began, or the taps stopped
    fault: bool = True


@dataclass
class Outcome:
    windows: list[Window]
    tallies: dict[str, Tally]
    wrk: dict[str, tuple[WrkResult, str]]  # summary, socket errors
    by_variant: dict[str, Counter[int]]  # malformed taps
    hostile_by_variant: dict[str, Counter[int]]
    api: dict[str, ApiAnswers]  # the hostile API requests' answers, by request
    breakdown: dict[str, int]  # rows the bench campaign's breakdown keeps, by dimension
    samples: list[Sample]
    clicks: list[tuple[float, float | None, bool]]  # clicked_at, committed_at, is_bot
    arrivals: list[tuple[int, float]]  # ClickDate ms, arrival (distinct deliveries)
    sink: dict[str, Any]
    drain_seconds: float
    logs: list[LogEntry] = field(default_factory=list)
    alive: dict[str, bool] = field(default_factory=dict)


def render(s: Setting, o: Outcome) -> tuple[str, bool]:
    """The docs section and whether the target was met."""
    totals = {name: tally.total() for name, tally in o.tallies.items()}
    answered = sum(t[302] for t in totals.values())
    server_errors = sum(n for t in totals.values() for status, n in t.items() if status >= 500)
    recorded = len(o.clicks)
    humans = sum(1 for _, _, bot in o.clicks if not bot)
    delivered = o.sink["distinct_clicks"]
    duplicates = o.sink["clicks"] - delivered
    dead = sum(1 for e in o.logs if e.message.startswith(TASK_DEAD))
    restarted = sum(1 for e in o.logs if e.message.startswith(TASK_RESTARTED))
    final = o.samples[-1] if o.samples else None
    unhealthy = [
        f"{name} /healthz {status}"
        for name, status in (final.healthz.items() if final else [])
        if status != 200
    ]
    restart_metrics = {
        name: value
        for service in (final.metrics.values() if final else [])
        for name, value in service.items()
        if name.split("{")[0] in RESTART_METRICS
    }
    not_alive = [name for name, up in o.alive.items() if not up]
    api_errors = {
        name: n
        for name, a in o.api.items()
        if (n := sum(k for status, k in a.statuses.items() if status >= 500))
    }
    api_unanswered = {
        name: a.statuses[NO_ANSWER] for name, a in o.api.items() if a.statuses[NO_ANSWER]
    }
    dead_events = counted(o.samples, "forwarder", DEAD_EVENTS)
    holes = {
        outcome: counted(o.samples, "forwarder", f'{HOLES}{{outcome="{outcome}"}}')
        for outcome in ("filled", "skipped")
    }
    problems = []
    if recorded != answered:
        problems.append(f"{answered - recorded:+,} clicks answered 302 but not recorded")
    if delivered != humans:
        problems.append(f"{humans - delivered:+,} recorded human clicks not delivered")
    if server_errors:
        problems.append(f"{server_errors:,} taps answered 5xx")
    if api_errors:
        problems.append("API answered 5xx to " + _named(api_errors))
    if api_unanswered:
        problems.append("API did not answer in time " + _named(api_unanswered))
    if dead_events:
        problems.append(f"{dead_events:,.0f} click events went to dead_events")
    if dead or unhealthy or not_alive:
        problems.append(f"dead: {dead} tasks, {', '.join(unhealthy + not_alive) or 'no process'}")
    if o.sink["invalid"]:
        problems.append(f"{o.sink['invalid']} POSTs broke the contract")
    commit = _commit()
    lines = [
        f"## `make chaos` ({s.mode}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"`make chaos` ({s.mode}) on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}), commit {commit}; load average {s.load_before:.2f} "
        f"before, {s.load_after:.2f} after (the machine is shared). The whole stack on the "
        "same cores: embedded PostgreSQL, tansu, `shortlink redirect --workers 2`, one "
        f"forwarder, the sink as the customer's endpoint (JSON, every click). {s.rate:,} "
        f"taps/s for {s.seconds} s: wrk paced, a phone's User-Agent, *{REPEAT}* on "
        f"{s.warm_links:,} links cached in both workers, *{FIRST}* ({s.first_share:.0%}) on "
        f"links never tapped before, each once ({_misses(o)}), *{MALFORMED}* "
        f"({s.malformed_share:.0%}) over raw sockets: {', '.join(VARIANTS)}; in their "
        f"window *{HOSTILE}* ({s.hostile_rate:,.0f}/s on the same links, raw sockets: "
        f"{', '.join(TAP_VARIANTS)}) and {len(o.api)} hostile API requests to `shortlink api`, "
        f"each up to {API_ROUNDS} times (counts below), as an account of their own. "
        "A window runs from its fault's start to the next fault's. *no answer*: taps sent "
        "and never answered; per window, wrk's are shown only when more than its connections "
        "(that many can be in flight across the window's edges); the totals are exact.",
        "",
        "| window | from s | " + " | ".join(TAP_KINDS) + " | 302s | recorded | delivered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    start = o.windows[0].start
    for w in o.windows:
        answers = {name: tally.between(w.start, w.end) for name, tally in o.tallies.items()}
        in_window = [c for c in o.clicks if int(w.start) <= c[0] < int(w.end)]
        delivered_here = sum(1 for ms, _ in o.arrivals if int(w.start) <= ms / 1000 < int(w.end))
        lines.append(
            f"| {w.name} | {w.start - start:.0f}-{w.end - start:.0f} | "
            + " | ".join(_statuses(answers.get(n, Counter())) for n in TAP_KINDS)
            + f" | {sum(a[302] for a in answers.values()):,} | {len(in_window):,} "
            f"| {delivered_here:,} |"
        )
    lines.append(
        "| **total** | | "
        + " | ".join(_statuses(totals.get(n, Counter())) for n in TAP_KINDS)
        + f" | **{answered:,}** | **{recorded:,}** | **{delivered:,}** |"
    )
    lines += [
        "",
        "Recovery: *taps all 302 after* is the time from the fault's end to the end of the "
        "last second with another answer or a tap unanswered (phone taps; 0: none after the "
        "fault ended); *recorded by* / *delivered by* is when the last "
        "click tapped during the fault (or within 1 s after it) was committed in PostgreSQL / "
        "reached the sink, from the fault's end; *delays* are the median and longest "
        "tap-to-commit and tap-to-delivery delay of the clicks tapped in the window (a click "
        "tapped just before the next fault waits for that one too).",
        "",
        "| window | what was done | lasted | taps all 302 after | recorded by | delivered by "
        "| delays: record / deliver | seen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in o.windows:
        lines.append(_recovery_row(w, o))
    lines += [
        "",
        f"**302s answered {answered:,}, clicks recorded {recorded:,} ({recorded - humans:,} "
        f"flagged bots), delivered {delivered:,} distinct** ({duplicates:,} redelivered with "
        f"the same RequestIdentifier, counted once; {o.sink['invalid']} contract violations); "
        f"{server_errors:,} taps answered 5xx; API requests: {sum(api_errors.values()):,} "
        f"answered 5xx, {sum(api_unanswered.values()):,} not answered in time; "
        f"`{DEAD_EVENTS}` "
        + (f"{dead_events:,.0f}" if dead_events is not None else "not seen")
        + (
            f"; broker served a later batch first {holes['filled']:,.0f} times (read again), "
            f"offsets stepped over {holes['skipped'] or 0:,.0f}"
            if holes["filled"] is not None
            else ""
        )
        + f"; drained {o.drain_seconds:.0f} s after the taps "
        f"stopped. Tasks: {dead} dead and {restarted} restarted by the logs"
        + (
            "; restart metrics " + ", ".join(f"`{k}` {v:.0f}" for k, v in restart_metrics.items())
            if restart_metrics
            else "; no `*_task_restarts_total` metrics on this commit (no supervision: a task "
            "that dies says nothing)"
        )
        + ". At the end: "
        + ", ".join(f"{n} {'up' if up else 'DOWN'}" for n, up in o.alive.items())
        + (f"; {', '.join(unhealthy)}" if unhealthy else "; every /healthz 200")
        + ".",
        "",
        "Malformed taps by variant: "
        + "; ".join(f"{name}: {_statuses(c)}" for name, c in o.by_variant.items())
        + ".",
        "",
        "Hostile taps by variant: "
        + "; ".join(f"{name}: {_statuses(c)}" for name, c in o.hostile_by_variant.items())
        + ".",
        "",
        "API answers by request (slowest answer): "
        + "; ".join(
            f"{name}: {_statuses(a.statuses)} ({a.slowest:.2f} s)" for name, a in o.api.items()
        )
        + ".",
        "",
        "The bench campaign's breakdown keeps, per dimension, "
        + (", ".join(f"{name} {n:,}" for name, n in o.breakdown.items()) or "nothing")
        + f" rows (at most {VALUES_KEPT}, a few more when forwarders add values at once; "
        "every other value is counted as Other).",
        "",
        "wrk: "
        + "; ".join(
            f"{name} {r.requests_per_second:,.0f}/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms,"
            f" socket errors: {errors or 'none'}"
            for name, (r, errors) in o.wrk.items()
        )
        + ".",
        "",
        "**Target (302s = recorded = delivered, 0 5xx from taps and the API, every API request "
        "answered in time, 0 dead events, 0 dead tasks): "
        + ("met**" if not problems else "missed**: " + "; ".join(problems))
        + ".",
        "",
    ]
    return "\n".join(lines) + "\n", not problems


def _named(counts: dict[str, int]) -> str:
    """'name x3, other x1'."""
    return ", ".join(f"{name} x{n}" for name, n in counts.items())


def _misses(o: Outcome) -> str:
    """How many taps the redirect workers' caches missed (each a PostgreSQL lookup)."""
    name = "shortlink_link_cache_misses_total"
    seen = [s.metrics["redirect"][name] for s in o.samples if name in s.metrics.get("redirect", {})]
    if len(seen) < 2 or seen[-1] < seen[0]:
        return "cache misses not known"
    return f"{seen[-1] - seen[0]:,.0f} cache misses over the run, each a PostgreSQL lookup"


def _statuses(counts: Counter[int]) -> str:
    if not counts:
        return "-"
    return ", ".join(
        f"{n:,} {'no answer' if status == NO_ANSWER else status}"
        for status, n in sorted(counts.items(), key=lambda item: (item[0] != 302, item[0]))
        if n
    )


def _recovery_row(w: Window, o: Outcome) -> str:
    if not w.fault:  # the quiet start: nothing to recover from
        return _row(w, o, "-", "-", "-")
    phone = [o.tallies[name] for name in (REPEAT, FIRST) if name in o.tallies]
    bad = [b for t in phone if (b := t.last_bad_second(w.start, w.end)) is not None]
    taps = f"{max(0.0, max(bad) + 1 - w.removed):.0f} s" if bad else "never disturbed"
    during = [c for c in o.clicks if w.start <= c[0] < w.removed + 1]
    committed = [c[1] for c in during if c[1] is not None]
    recorded_by = f"{max(committed) - w.removed:.1f} s" if committed else "-"
    arrivals = [at for ms, at in o.arrivals if w.start <= ms / 1000 < w.removed + 1]
    delivered_by = f"{max(arrivals) - w.removed:.1f} s" if arrivals else "-"
    return _row(w, o, taps, recorded_by, delivered_by)


def _row(w: Window, o: Outcome, taps: str, recorded_by: str, delivered_by: str) -> str:
    to_commit = [c[1] - c[0] for c in o.clicks if w.start <= c[0] < w.end and c[1] is not None]
    to_sink = [at - ms / 1000 for ms, at in o.arrivals if w.start <= ms / 1000 < w.end]
    delays = f"{_spread(to_commit)} / {_spread(to_sink)}"
    seen = summarise(o.logs, w.start, w.end)
    for probe, spent in sorted(failing(o.samples, w.start, w.end).items()):
        if spent >= 1:
            seen.append(f"{probe} {spent:.0f} s")
    for service, metric, what in (
        ("forwarder", "forwarder_clicks_recorded_total", "recording"),
        ("forwarder", 'forwarder_delivery_attempts_total{result="delivered"}', "delivering"),
        ("redirect", "shortlink_events_published_total", "publishing"),
    ):
        flat = longest_flat(o.samples, service, metric, w.start, w.end)
        if flat >= 3:
            seen.append(f"{what} stalled {flat:.0f} s")
    lasted = f"{w.removed - w.start:.1f} s" if w.removed > w.start else "-"
    return (
        f"| {w.name} | {w.note} | {lasted} | {taps} | {recorded_by} | {delivered_by} | {delays} "
        f"| {'; '.join(seen) or '-'} |"
    )


def _spread(delays: list[float]) -> str:
    """'p50 / max' of some delays, in seconds."""
    if not delays:
        return "-"
    ordered = sorted(delays)
    return f"{ordered[len(ordered) // 2]:.1f}-{ordered[-1]:.1f} s"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (with local changes)" if changed else "")
