"""The counters' shape both services share: the first-click histogram (campaigns.counters)."""

from __future__ import annotations

import pytest

from shortlink.campaigns.counters import bucket_seconds, first_click_bucket, quantile


@pytest.mark.parametrize("seconds", [1, 30, 600, 86_400, 30 * 86_400])
def test_a_bucket_stands_for_its_time_within_five_percent(seconds: int) -> None:
    """The bucket of a time to first click gives that time back within the bucket's width."""
    bucket = first_click_bucket(0, seconds * 1000)
    assert bucket_seconds(bucket) == pytest.approx(seconds, rel=0.05)


def test_quantiles_of_a_histogram() -> None:
    """Median and p90 come from the buckets' counts; an empty histogram has none."""
    histogram = [(first_click_bucket(0, 30_000), 8), (first_click_bucket(0, 600_000), 2)]
    assert quantile(histogram, 0.5) == pytest.approx(30, rel=0.05)
    assert quantile(histogram, 0.9) == pytest.approx(600, rel=0.05)
    assert quantile([], 0.5) is None
