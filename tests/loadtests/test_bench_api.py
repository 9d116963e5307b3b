"""The API benchmark's rendering series sends the bodies issue 21 names."""

from __future__ import annotations

from loadtests.bench_api import RENDER_LONG, RENDER_SHORT, percentile
from shortlink.api import rewrite, sms


def test_render_bodies_are_the_issues_pair() -> None:
    """30 ASCII characters against 470 with one emoji, both tracking the same one link."""
    assert len(RENDER_SHORT) == 30
    assert RENDER_SHORT.isascii()
    assert len(RENDER_LONG) == 470
    assert [c for c in RENDER_LONG if ord(c) > 0xFFFF] == ["\U0001f342"]
    assert rewrite.plan(RENDER_SHORT, "track").targets == ("https://ab.co/x",)
    assert rewrite.plan(RENDER_LONG, "track").targets == ("https://ab.co/x",)
    assert sms.measure(RENDER_LONG).encoding == "UCS-2"


def test_percentile_is_the_nearest_rank() -> None:
    """p50 and p99 of 1..100 are 51 and 100; one value is every percentile."""
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (51.0, 100.0)
    assert percentile([3.0], 0.99) == 3.0
