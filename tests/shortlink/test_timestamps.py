"""The one timestamp format of every answer (shortlink.timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shortlink.timestamps import rfc3339


def test_times_are_utc_with_z() -> None:
    """Any offset is turned to UTC and written with Z; a fraction only when there is one."""
    assert rfc3339(datetime(2026, 5, 1, 9, 30, tzinfo=UTC)) == "2026-05-01T09:30:00Z"
    tokyo = timezone(timedelta(hours=9))
    assert rfc3339(datetime(2026, 5, 1, 18, 30, 0, 500, tzinfo=tokyo)) == (
        "2026-05-01T09:30:00.000500Z"
    )
    assert rfc3339(None) is None
