"""A campaign's taps over time, from the per-minute rollup campaign_minutes.

The forwarder adds each recorded tap to its minute's row; a series reads a few
thousand rows at most, per minute for the first hours after the first link was
created and per hour after, with zeros where nothing was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shortlink.db import Executor

# Per minute for the first hours after the first link was created, per hour after.
MINUTE_SERIES = timedelta(hours=6)
# The hourly series runs until now, but no longer than links live by default.
HOUR_SERIES_UNTIL = timedelta(days=90)


@dataclass(frozen=True)
class Point:
    at: datetime
    taps: int
    first_taps: int
    bot_taps: int


@dataclass(frozen=True)
class Series:
    """Taps per minute from the campaign's start for MINUTE_SERIES, per hour after."""

    start: datetime  # the minute the first link was created
    minutes: list[Point]
    hours: list[Point]


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _filled(
    points: dict[datetime, Point], start: datetime, end: datetime, step: timedelta
) -> list[Point]:
    """Every step from start to end (inclusive), zero where nothing was recorded."""
    filled = []
    at = start
    while at <= end:
        filled.append(points.get(at) or Point(at, 0, 0, 0))
        at += step
    return filled


async def series(
    conn: Executor, account_id: int, name: str, created_at: datetime, *, now: datetime
) -> Series:
    """The campaign's taps over time, from the rollup (a few thousand rows at most)."""
    start = _minute(created_at.astimezone(UTC))
    cutoff = start + MINUTE_SERIES
    rows = await conn.fetch(
        """
        SELECT CASE WHEN minute < $3 THEN minute ELSE date_bin('1 hour', minute, $4) END AS at,
               sum(taps)::bigint AS taps, sum(first_taps)::bigint AS first_taps,
               sum(bot_taps)::bigint AS bot_taps
        FROM campaign_minutes WHERE account_id = $1 AND campaign = $2
        GROUP BY 1 ORDER BY 1
        """,
        account_id,
        name,
        cutoff,
        start,
    )
    points = {
        row["at"]: Point(row["at"], row["taps"], row["first_taps"], row["bot_taps"]) for row in rows
    }
    early = [at for at in points if at < cutoff]
    last_minute = max([*early, min(_minute(now), cutoff - timedelta(minutes=1))])
    minutes = _filled(points, start, max(start, last_minute), timedelta(minutes=1))
    later = [at for at in points if at >= cutoff]
    hours: list[Point] = []
    if now >= cutoff or later:
        until = min(now, start + HOUR_SERIES_UNTIL)
        end = max([*later, start + (until - start) // timedelta(hours=1) * timedelta(hours=1)])
        hours = _filled(points, cutoff, max(cutoff, end), timedelta(hours=1))
    return Series(start, minutes, hours)
