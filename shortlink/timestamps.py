"""The one timestamp format of every answer: RFC 3339 in UTC, ending in `Z`.

The API's JSON, its CSV files, the dashboard's machine-readable times and the
CLI's output all write a moment with `rfc3339`, so a client parses one form
(`2026-05-01T09:30:00Z`, `2026-05-01T09:30:00.123456Z` when it has a fraction of
a second). Human-readable text (the dashboard's "2026-05-01 09:30:00 UTC", log
lines) is not an answer and keeps its own form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def rfc3339(moment: datetime) -> str: ...


@overload
def rfc3339(moment: None) -> None: ...


def rfc3339(moment: datetime | None) -> str | None:
    """`moment` in UTC as RFC 3339 with `Z` (microseconds only when it has some); None stays
    None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
