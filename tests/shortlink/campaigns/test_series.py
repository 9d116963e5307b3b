"""Taps over time from the per-minute rollup (shortlink.campaigns.series)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from forwarder.recorder import record
from shortlink.campaigns.series import series
from tests.clicks import clicks, events, make_links


async def test_series_per_minute_then_per_hour(db: asyncpg.Connection, account_id: int) -> None:
    """Taps land in their minute for 6 hours after the first link, then in hours; zero between."""
    made = await make_links(db, account_id, 4, client_identifier="series")
    start = made[0].created_at_ms / 1000
    batch = events(clicks(made[:2], at=start + 61))  # minute 1: two first taps
    batch += events(clicks(made[:1], at=start + 125))  # minute 2: a repeat
    batch += events(clicks(made[2:3], at=start + 7 * 3600 + 60, user_agent="Slackbot 1.0"))
    batch += events(clicks(made[3:4], at=start + 7 * 3600 + 1800))  # same hour as the bot
    await record(db, batch, batch_size=100)
    created = datetime.fromtimestamp(start, UTC)
    now = created + timedelta(hours=9)
    found = await series(db, account_id, "series", created, now=now)
    assert found.start == created.replace(second=0, microsecond=0)
    assert len(found.minutes) == 360
    by_minute = {p.at: (p.taps, p.first_taps, p.bot_taps) for p in found.minutes if p.taps}
    minute = timedelta(minutes=1)

    def at(seconds: float) -> datetime:
        moment = created + timedelta(seconds=seconds)
        return moment.replace(second=0, microsecond=0)

    expected: dict[datetime, tuple[int, int, int]] = {}
    for moment, values in ((at(61), (2, 2, 0)), (at(125), (1, 0, 0))):
        old = expected.get(moment, (0, 0, 0))
        expected[moment] = (old[0] + values[0], old[1] + values[1], old[2] + values[2])
    assert by_minute == expected
    assert found.minutes[1].at == found.start + minute
    hours = {p.at: (p.taps, p.first_taps, p.bot_taps) for p in found.hours}
    assert len(hours) == 4  # hours 6, 7, 8 and the current one, 9, after the start
    assert hours[found.start + timedelta(hours=7)] == (1, 1, 1)
    assert sum(taps for taps, _, _ in hours.values()) == 1
