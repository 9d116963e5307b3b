"""Dashboard reads: campaigns by keyset, the series from the rollup, recipients, clicks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from forwarder.recorder import record
from shortlink.api import insights
from tests.forwarder.conftest import clicks, make_links
from tests.shortlink.api.dashboard.conftest import events


async def test_campaigns_page_newest_first_with_a_cursor(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Pages of two walk every campaign once, newest first; the search treats % and _ literally."""
    for name in ("a", "b_1", "c%", "d"):
        await make_links(db, account_id, 1, client_identifier=name)
    seen, cursor = [], None
    while True:
        items, cursor = await insights.campaigns(
            db, account_id, search=None, cursor=cursor, limit=2
        )
        seen += [item["client_identifier"] for item in items]
        if cursor is None:
            break
    assert seen == ["d", "c%", "b_1", "a"]
    found, _ = await insights.campaigns(db, account_id, search="_", cursor=None, limit=10)
    assert [item["client_identifier"] for item in found] == ["b_1"]
    found, _ = await insights.campaigns(db, account_id, search="%", cursor=None, limit=10)
    assert [item["client_identifier"] for item in found] == ["c%"]
    with pytest.raises(insights.BadCursor):
        await insights.campaigns(db, account_id, search=None, cursor="e30", limit=2)


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
    series = await insights.series(db, account_id, "series", created, now=now)
    assert series.start == created.replace(second=0, microsecond=0)
    assert len(series.minutes) == 360
    by_minute = {p.at: (p.taps, p.first_taps, p.bot_taps) for p in series.minutes if p.taps}
    minute = timedelta(minutes=1)

    def at(seconds: float) -> datetime:
        moment = created + timedelta(seconds=seconds)
        return moment.replace(second=0, microsecond=0)

    expected: dict[datetime, tuple[int, int, int]] = {}
    for moment, values in ((at(61), (2, 2, 0)), (at(125), (1, 0, 0))):
        old = expected.get(moment, (0, 0, 0))
        expected[moment] = (old[0] + values[0], old[1] + values[1], old[2] + values[2])
    assert by_minute == expected
    assert series.minutes[1].at == series.start + minute
    hours = {p.at: (p.taps, p.first_taps, p.bot_taps) for p in series.hours}
    assert len(hours) == 4  # hours 6, 7, 8 and the current one, 9, after the start
    assert hours[series.start + timedelta(hours=7)] == (1, 1, 1)
    assert sum(taps for taps, _, _ in hours.values()) == 1


async def test_recipients_pages_cover_each_link_once(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Keyset pages by phone number, then links without a number, each link exactly once."""
    made = await make_links(db, account_id, 7, client_identifier="people")
    await db.execute(
        "UPDATE links SET phone_number = NULL WHERE id = ANY($1)", [made[1].id, made[4].id]
    )
    await record(db, events(clicks(made[:1])) + events(clicks(made[:1])), batch_size=100)
    seen, cursor = [], None
    while True:
        items, cursor = await insights.recipients(
            db, account_id, "people", phone_prefix=None, cursor=cursor, limit=2
        )
        seen += items
        if cursor is None:
            break
    assert [r["tracking_url_id"] for r in seen] == [made[i].id for i in (0, 2, 3, 5, 6, 1, 4)]
    assert (seen[0]["taps"], seen[0]["device_type"], seen[0]["os"]) == (2, "mobile", "iOS")
    assert seen[1]["taps"] == 0
    assert seen[1]["first_tap_at"] is None


def test_phone_prefix_range() -> None:
    """A prefix's range ends where the next prefix starts (with a carry over nines)."""
    assert insights.phone_prefix_range("4477") == ("4477", "4478")
    assert insights.phone_prefix_range("4479") == ("4479", "448")
    assert insights.phone_prefix_range("99") == ("99", None)


async def test_all_clicks_in_batches_oldest_first(db: asyncpg.Connection, account_id: int) -> None:
    """The export walks every click once, oldest first, however the batches fall."""
    made = await make_links(db, account_id, 5, client_identifier="walk")
    start = made[0].created_at_ms / 1000
    batch = []
    for i, link in enumerate(made):
        batch += events(clicks([link], at=start + 10 * i))
    await record(db, batch, batch_size=100)
    rows = [
        row async for chunk in insights.all_clicks(db, account_id, "walk", batch=2) for row in chunk
    ]
    assert [row[1] for row in rows] == [link.id for link in made]
