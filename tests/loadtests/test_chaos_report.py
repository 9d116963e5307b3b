"""The chaos benchmark's verdict and tables, from a run's measurements."""

from __future__ import annotations

from collections import Counter

from loadtests.chaos_report import (
    DEAD_EVENTS,
    FIRST,
    HOSTILE,
    MALFORMED,
    REPEAT,
    Outcome,
    Setting,
    Window,
    render,
)
from loadtests.hostile import ApiAnswers
from loadtests.taps import Tally
from loadtests.watch import LogEntry, Sample
from loadtests.wrk import WrkResult

T0 = 1796119200.0
SETTING = Setting("quick", 10, 4, 0.1, 0.01, 150, 1000, 0.5, 0.7)


def outcome(recorded: int, delivered: int, statuses: Counter[tuple[int, int]]) -> Outcome:
    """Four seconds of taps, a fault from second 2 to 3, `recorded` clicks in PostgreSQL."""
    sent = Counter({int(T0) + s: 10 for s in range(4)})
    tallies = {
        REPEAT: Tally(statuses, sent, slack=2),
        FIRST: Tally(),
        MALFORMED: Tally(),
        HOSTILE: Tally(),
    }
    clicks = [(T0 + i / 10, T0 + i / 10 + 0.2, False) for i in range(recorded)]
    arrivals = [(int((T0 + i / 10) * 1000), T0 + i / 10 + 0.5) for i in range(delivered)]
    return Outcome(
        windows=[
            Window("steady", T0, T0, "no fault", T0 + 2, fault=False),
            Window("broker paused", T0 + 2, T0 + 3, "SIGSTOP", T0 + 4),
        ],
        tallies=tallies,
        wrk={REPEAT: (WrkResult(10, 1.0, 2.0, 40, 0), "")},
        by_variant={},
        hostile_by_variant={"3,000-letter browser": Counter({302: 5})},
        api={"dashboard, cookie \\xff": ApiAnswers(Counter({303: 3}), 0.01)},
        breakdown={"browser": 201},
        samples=[],
        clicks=clicks,
        arrivals=arrivals,
        sink={"distinct_clicks": delivered, "clicks": delivered + 1, "invalid": 0},
        drain_seconds=1.0,
        logs=[LogEntry(T0 + 2.5, "redirect", "warning", "Kafka send failed; spooling clicks")],
        alive={"forwarder": True},
    )


def all_302() -> Counter[tuple[int, int]]:
    return Counter({(int(T0) + s, 302): 10 for s in range(4)})


def test_every_tap_recorded_and_delivered_meets_the_target() -> None:
    """40 redirects, 40 clicks recorded and delivered, no 5xx: the target is met, and each
    window's row shows its counts and what the logs said."""
    report, passed = render(SETTING, outcome(40, 40, all_302()))
    assert passed
    assert "| steady | 0-2 | 20 302 | - | - | - | 20 | 20 | 20 |" in report
    assert "Hostile taps by variant: 3,000-letter browser: 5 302." in report
    assert "API answers by request (slowest answer): dashboard, cookie \\xff: 3 303" in report
    assert "redirect: Kafka send failed; spooling clicks" in report
    assert "1 redelivered with the same RequestIdentifier" in report
    assert "met**" in report


def test_a_lost_click_and_a_503_miss_the_target() -> None:
    """One click answered 302 but never recorded, and a 503 during the fault, are each named
    in the verdict; the fault's row says when taps were all 302 again."""
    statuses = all_302()
    statuses[int(T0) + 2, 302] -= 1
    statuses[int(T0) + 2, 503] += 1
    report, passed = render(SETTING, outcome(38, 38, statuses))
    assert not passed
    assert "+1 clicks answered 302 but not recorded" in report
    assert "1 taps answered 5xx" in report
    assert "| broker paused | SIGSTOP | 1.0 s | 0 s |" in report


def test_api_5xx_timeouts_and_dead_events_miss_the_target() -> None:
    """A hostile API request answered 500, one unanswered within its timeout, and click
    events in dead_events (counted across a forwarder restart) are each named."""
    o = outcome(40, 40, all_302())
    o.api = {
        "sign-in, charset=bogus": ApiAnswers(Counter({500: 3}), 0.01),
        "messages, 5,000 x 100 KB template": ApiAnswers(Counter({0: 1, 201: 2}), 30.0),
    }
    o.samples = [
        Sample(T0 + i, {}, {}, {"forwarder": {DEAD_EVENTS: dead}}, [])
        for i, dead in enumerate([0, 2, 0, 1])  # the forwarder restarted at the third
    ]
    report, passed = render(SETTING, o)
    assert not passed
    assert "API answered 5xx to sign-in, charset=bogus x3" in report
    assert "API did not answer in time messages, 5,000 x 100 KB template x1" in report
    assert "3 click events went to dead_events" in report
