"""Chart data for the dashboard: bars with their geometry, the first-tap histogram in human
ranges, and the time series as uPlot columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shortlink.api.dashboard.charts import (
    FIRST_TAP_BINS,
    Bar,
    bars,
    first_tap_bars,
    series_data,
)
from shortlink.campaigns.counters import first_click_bucket
from shortlink.campaigns.series import Point, Series


def test_bars_are_largest_first_as_fractions_of_the_largest() -> None:
    """Counts become bars sorted by count (ties by label), each a fraction of the largest."""
    assert bars({"Android": 5, "iOS": 10, "Windows": 5}) == [
        Bar("iOS", 10, 1.0),
        Bar("Android", 5, 0.5),
        Bar("Windows", 5, 0.5),
    ]


def test_past_the_limit_the_rest_are_summed_as_others() -> None:
    """Beyond `limit` bars, the smaller counts are one 'others' bar, which may be the largest."""
    counts = {f"c{i}": 10 - i for i in range(6)}  # 10, 9, ..., 5
    shown = bars(counts, limit=2)
    assert [(b.label, b.value) for b in shown] == [("c0", 10), ("c1", 9), ("others", 26)]
    assert [b.fraction for b in shown] == [10 / 26, 9 / 26, 1.0]
    assert [b.label for b in bars(counts, limit=6)] == [f"c{i}" for i in range(6)]


def test_no_counts_no_bars_and_zero_counts_have_no_length() -> None:
    """Nothing counted: no bars; only zeros: bars of fraction 0, never a division by zero."""
    assert bars({}) == []
    assert bars({"a": 0}) == [Bar("a", 0, 0.0)]


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (0, "< 1 min"),
        (30, "< 1 min"),
        (200, "1-5 min"),
        (600, "5-15 min"),
        (1800, "15-60 min"),
        (2 * 3600, "1-3 h"),
        (6 * 3600, "3-12 h"),
        (18 * 3600, "12-24 h"),
        (3 * 86400, "1-7 d"),
        (30 * 86400, "> 7 d"),
    ],
)
def test_a_first_tap_falls_in_its_human_range(seconds: int, label: str) -> None:
    """A first tap `seconds` after the send is counted in the range that holds it."""
    bucket = first_click_bucket(0, seconds * 1000)
    shown = first_tap_bars([(bucket, 3)])
    assert [b.label for b in shown if b.value] == [label]
    assert [b for b in shown if b.value] == [Bar(label, 3, 1.0)]


def test_the_histogram_shows_every_range_in_order_summing_buckets() -> None:
    """Every range is shown, shortest first, empty ones at 0; buckets in one range add up."""
    histogram = [
        (first_click_bucket(0, 10_000), 2),
        (first_click_bucket(0, 40_000), 2),
        (first_click_bucket(0, 7200_000), 1),
    ]
    shown = first_tap_bars(histogram)
    assert [b.label for b in shown] == [label for label, _ in FIRST_TAP_BINS]
    assert {b.label: (b.value, b.fraction) for b in shown if b.value} == {
        "< 1 min": (4, 1.0),
        "1-3 h": (1, 0.25),
    }
    assert all(b.fraction == 0.0 for b in first_tap_bars([]))


def test_series_are_uplot_columns_in_epoch_seconds() -> None:
    """The series become x (seconds since the epoch), taps, first taps and bot taps columns,
    per minute and per hour, with the campaign's start."""
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    minutes = [
        Point(start, 5, 3, 1),
        Point(start + timedelta(minutes=1), 2, 0, 0),
    ]
    hours = [Point(start, 7, 3, 1)]
    data = series_data(Series(start, minutes, hours))
    epoch = int(start.timestamp())
    assert data == {
        "start": epoch,
        "minutes": [[epoch, epoch + 60], [5, 2], [3, 0], [1, 0]],
        "hours": [[epoch], [7], [3], [1]],
    }


def test_an_empty_series_has_empty_columns() -> None:
    """A campaign with no taps yet still has four columns, all empty."""
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    data = series_data(Series(start, [], []))
    assert data["minutes"] == data["hours"] == [[], [], [], []]
