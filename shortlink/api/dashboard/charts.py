"""Chart data: the time series as uPlot columns, and bars drawn as server-side SVG.

The clicks-over-time charts are drawn in the browser by the vendored uPlot
from the columns made here; the histogram and the breakdowns are bars whose
geometry is computed here and drawn by the templates as SVG (no script, no
inline style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shortlink.campaigns.counters import bucket_seconds
from shortlink.campaigns.series import Point, Series

# Time from send to first tap, in these ranges (seconds, upper bound exclusive).
FIRST_TAP_BINS: tuple[tuple[str, float], ...] = (
    ("< 1 min", 60),
    ("1-5 min", 300),
    ("5-15 min", 900),
    ("15-60 min", 3600),
    ("1-3 h", 3 * 3600),
    ("3-12 h", 12 * 3600),
    ("12-24 h", 24 * 3600),
    ("1-7 d", 7 * 86400),
    ("> 7 d", float("inf")),
)


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    fraction: float  # of the largest bar, 0..1


def bars(counts: dict[str, int], *, limit: int = 8) -> list[Bar]:
    """The largest `limit` counts as bars, largest first; the rest summed as 'others'."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ranked[:limit]
    rest = sum(value for _, value in ranked[limit:])
    if rest:
        shown.append(("others", rest))
    top = max((value for _, value in shown), default=0)
    return [Bar(label, value, value / top if top else 0.0) for label, value in shown]


def first_tap_bars(histogram: list[tuple[int, int]]) -> list[Bar]:
    """The first-tap histogram (buckets ~5% wide, shortlink.campaigns.counters) in human ranges."""
    counts = dict.fromkeys((label for label, _ in FIRST_TAP_BINS), 0)
    for bucket, links in histogram:
        seconds = bucket_seconds(bucket)
        label = next(label for label, upper in FIRST_TAP_BINS if seconds < upper)
        counts[label] += links
    top = max(counts.values(), default=0)
    return [Bar(label, value, value / top if top else 0.0) for label, value in counts.items()]


def _columns(points: list[Point]) -> list[list[int]]:
    return [
        [int(point.at.timestamp()) for point in points],
        [point.taps for point in points],
        [point.first_taps for point in points],
        [point.bot_taps for point in points],
    ]


def series_data(series: Series) -> dict[str, Any]:
    """uPlot's columns (x: seconds since the epoch; taps, first taps, bot taps)."""
    return {
        "start": int(series.start.timestamp()),
        "minutes": _columns(series.minutes),
        "hours": _columns(series.hours),
    }
