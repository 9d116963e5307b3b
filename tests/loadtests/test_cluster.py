"""make cluster's report: a window passes only when every 302 is recorded and delivered
with no 5xx; deliveries seen twice are reported, not hidden."""

from __future__ import annotations

import argparse

from loadtests.cluster import Window, render


def window(**changes: object) -> Window:
    base = Window(
        "forwarder host killed",
        note="forwarder1: 3 processes SIGKILLed",
        answered={302: 900},
        p99_ms={"redirect1": 4.2, "redirect2": 5.1},
        recorded=900,
        delivered=900,
        stall=7.5,
        stats_slowest_ms=31.0,
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


ARGS = argparse.Namespace(chaos=True, rate=200)


def test_every_tap_recorded_and_delivered_passes() -> None:
    """302s = recorded = delivered and no 5xx: the window passes, its figures in the table."""
    report, passed = render([window(delivered_twice=12)], ARGS)
    assert passed
    assert report.startswith("## `make cluster-chaos`, ")
    assert "| forwarder host killed | 900 | 900 | 900 | 12 | 0 | 0 | 7.5 s | 4.2 / 5.1 |" in report
    assert "- forwarder host killed: forwarder1: 3 processes SIGKILLed" in report


def test_a_lost_click_an_undelivered_one_or_a_5xx_fails() -> None:
    """Any of them fails the run."""
    for bad in (
        window(recorded=899),
        window(delivered=899),
        window(answered={302: 900, 503: 1}),
    ):
        report, passed = render([window(), bad], ARGS)
        assert not passed
        assert "**no**" in report
