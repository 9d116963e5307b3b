"""The campaign counters' shape, shared by the forwarder that keeps them and the readers.

Breakdowns (by_browser, by_os, by_device_type, by_country) are bounded whatever
taps arrive (anyone can send any User-Agent): a campaign keeps at most
VALUES_KEPT values per dimension (the recorder counts newer ones as OTHER), and
statistics show the VALUES_SHOWN values with most clicks, the rest summed as
OTHER. ua-parser's own name for what it does not know is also "Other": one row
holds both.

The time from shortening to a link's first click is kept as a histogram
(campaign_first_click) with buckets about 5% wide; median and p90 are read from it.
"""

from __future__ import annotations

import math

VALUES_KEPT = 200
VALUES_SHOWN = 20
OTHER = "Other"

_HISTOGRAM_BASE = math.log(1.05)


def first_click_bucket(shortened_at_ms: int, clicked_at_ms: int) -> int:
    """Histogram bucket of the time from shortening to the first click (~5% wide)."""
    seconds = max(0.0, (clicked_at_ms - shortened_at_ms) / 1000)
    return round(math.log1p(seconds) / _HISTOGRAM_BASE)


def bucket_seconds(bucket: int) -> float:
    """The time a histogram bucket stands for (its centre)."""
    return math.expm1(bucket * _HISTOGRAM_BASE)


def quantile(histogram: list[tuple[int, int]], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram of (bucket, count), or None if it is empty."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket, count in sorted(histogram):
        seen += count
        if seen >= rank:
            return round(bucket_seconds(bucket), 1)
    return round(bucket_seconds(max(b for b, _ in histogram)), 1)
