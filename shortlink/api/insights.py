"""What the dashboard and the CSV files read: campaigns, time series, recipients.

Every read is an index lookup or a keyset range, never a scan of clicks or an
OFFSET: campaigns come from campaign_stats (newest first by its
campaign_stats_newest index), the time series from the per-minute rollup
campaign_minutes that the forwarder keeps, recipients from links by
(account, campaign, phone number) with each recipient's taps counted on
clicks_link (a recipient's link has few clicks), and the clicks export walks
clicks_campaign.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shortlink.db import Executor

# Per minute for the first hours after the first link was created, per hour after.
MINUTE_SERIES = timedelta(hours=6)
# The hourly series runs until now, but no longer than links live by default.
HOUR_SERIES_UNTIL = timedelta(days=90)
EXPORT_BATCH = 5000


class BadCursor(ValueError):
    """A pagination cursor this service did not make."""


# The campaigns listing's cursor is the position of the last campaign of a page:
# its start in microseconds since the epoch and its name's UTF-8 in hex. Every
# cursor of this form can be read (a name that is not UTF-8 or holds NUL is read
# with replacement characters and simply matches no campaign).
CAMPAIGN_CURSOR_PATTERN = r"^[0-9]{1,17}-(?:[0-9a-f]{2}){0,800}$"
_CAMPAIGN_CURSOR = re.compile(CAMPAIGN_CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_campaign_cursor(created_at: datetime, name: str) -> str:
    return f"{(created_at - _EPOCH) // timedelta(microseconds=1)}-{name.encode().hex()}"


def decode_campaign_cursor(cursor: str) -> tuple[datetime, str]:
    if _CAMPAIGN_CURSOR.fullmatch(cursor) is None:
        raise BadCursor("is not a cursor this API returned (next_cursor)")
    micros, _, name = cursor.partition("-")
    text = bytes.fromhex(name).decode("utf-8", "replace").replace("\x00", "\ufffd")
    return _EPOCH + timedelta(microseconds=int(micros)), text


def encode_cursor(*values: Any) -> str:
    raw = orjson.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise BadCursor("cursor is not one this API returned") from None
    if not isinstance(values, list) or len(values) != size:
        raise BadCursor("cursor is not one this API returned")
    return values


# -- campaigns -------------------------------------------------------------------


def _like_pattern(search: str) -> str:
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_CAMPAIGN_FIELDS = """
    s.campaign, s.links, s.total_clicks, s.unique_clicks, s.bot_clicks, s.created_at,
    (SELECT m.first_at FROM campaign_minutes m
     WHERE m.account_id = s.account_id AND m.campaign = s.campaign
     ORDER BY m.minute LIMIT 1) AS first_activity,
    (SELECT m.last_at FROM campaign_minutes m
     WHERE m.account_id = s.account_id AND m.campaign = s.campaign
     ORDER BY m.minute DESC LIMIT 1) AS last_activity
"""


def _campaign(row: Any) -> dict[str, Any]:
    links = row["links"]
    return {
        "client_identifier": row["campaign"],
        "links": links,
        "total_clicks": row["total_clicks"],
        "unique_clicks": row["unique_clicks"],
        "bot_clicks": row["bot_clicks"],
        "click_through_rate": round(row["unique_clicks"] / links, 4) if links else 0.0,
        "created_at": row["created_at"],
        "first_activity": row["first_activity"],
        "last_activity": row["last_activity"],
    }


async def campaigns(
    conn: Executor,
    account_id: int,
    *,
    search: str | None,
    cursor: str | None,
    limit: int,
    only: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the account's campaigns, newest first, and the next page's cursor.

    `search` keeps campaigns whose name contains it (any case); `only` keeps one
    campaign (a dashboard link for one campaign sees no other). Links made
    without a campaign are not a campaign here.
    """
    after_at, after_name = (None, None) if cursor is None else decode_campaign_cursor(cursor)
    rows = await conn.fetch(
        f"""
        SELECT {_CAMPAIGN_FIELDS} FROM campaign_stats s
        WHERE s.account_id = $1 AND s.campaign <> ''
          AND ($2::text IS NULL OR s.campaign ILIKE $2)
          AND ($3::text IS NULL OR s.campaign = $3)
          AND ($4::timestamptz IS NULL OR (s.created_at, s.campaign) < ($4, $5::text))
        ORDER BY s.created_at DESC, s.campaign DESC
        LIMIT $6
        """,
        account_id,
        _like_pattern(search) if search else None,
        only,
        after_at,
        after_name,
        limit + 1,
    )
    items = [_campaign(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_campaign_cursor(last["created_at"], last["campaign"])
    return items, next_cursor


async def campaign(conn: Executor, account_id: int, name: str) -> dict[str, Any] | None:
    """One campaign's headline figures and activity, or None if the account has no such one."""
    row = await conn.fetchrow(
        f"""
        SELECT {_CAMPAIGN_FIELDS} FROM campaign_stats s
        WHERE s.account_id = $1 AND s.campaign = $2 AND s.campaign <> ''
        """,
        account_id,
        name,
    )
    return None if row is None else _campaign(row)


# -- time series -------------------------------------------------------------------


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


async def first_tap_histogram(conn: Executor, account_id: int, name: str) -> list[tuple[int, int]]:
    """(bucket, links) of the time from shortening to the first tap (shortlink.stats)."""
    rows = await conn.fetch(
        "SELECT bucket, links FROM campaign_first_click WHERE account_id = $1 AND campaign = $2",
        account_id,
        name,
    )
    return [(row["bucket"], row["links"]) for row in rows]


# -- recipients --------------------------------------------------------------------

# One row per link (each recipient has a link of their own); taps by people and
# by bots, and the device of the first tap by a person, from clicks_link.
_RECIPIENT = """
    SELECT l.id, l.token, l.phone_number, l.client_ref, l.created_at,
           coalesce(
               (SELECT fc.clicked_at FROM first_clicks fc WHERE fc.link_id = l.id),
               l.first_clicked_at
           ) AS first_clicked_at,
           t.taps, t.bot_taps, f.device_type, f.os, f.browser
    FROM links l
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE NOT c.is_bot) AS taps,
               count(*) FILTER (WHERE c.is_bot) AS bot_taps
        FROM clicks c WHERE c.link_id = l.id) AS t ON true
    LEFT JOIN LATERAL (
        SELECT c.device_type, c.os, c.browser FROM clicks c
        WHERE c.link_id = l.id AND NOT c.is_bot ORDER BY c.clicked_at LIMIT 1) AS f ON true
    WHERE l.account_id = $1 AND l.client_identifier = $2
"""


def phone_prefix_range(digits: str) -> tuple[str, str | None]:
    """[low, high) of the phone numbers starting with `digits` (numbers are digits only)."""
    stripped = digits.rstrip("9")
    if not stripped:
        return digits, None
    return digits, stripped[:-1] + str(int(stripped[-1]) + 1)


def _recipient(row: Any) -> dict[str, Any]:
    return {
        "tracking_url_id": row["id"],
        "token": row["token"],
        "phone_number": row["phone_number"],
        "client_ref": row["client_ref"],
        "created_at": row["created_at"],
        "first_tap_at": row["first_clicked_at"],
        "taps": row["taps"],
        "bot_taps": row["bot_taps"],
        "device_type": row["device_type"],
        "os": row["os"],
        "browser": row["browser"],
    }


async def recipients(
    conn: Executor,
    account_id: int,
    name: str,
    *,
    phone_prefix: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the campaign's recipients by phone number, and the next page's cursor.

    Keyset on (phone_number, id); recipients without a phone number come last, by id.
    """
    after = decode_cursor(cursor, 2) if cursor else None
    if after is not None and not (
        (after[0] is None or (isinstance(after[0], str) and "\x00" not in after[0]))
        and type(after[1]) is int
        and 0 <= after[1] < 2**63
    ):
        raise BadCursor("cursor is not one this API returned")
    low, high = phone_prefix_range(phone_prefix) if phone_prefix else ("", None)
    rows: list[Any] = []
    if after is None or after[0] is not None:
        after_phone, after_id = (after[0], after[1]) if after else (low, 0)
        rows = await conn.fetch(
            _RECIPIENT
            + """
              AND l.phone_number >= $3 AND ($4::text IS NULL OR l.phone_number < $4)
              AND l.phone_number >= $5 AND (l.phone_number > $5 OR l.id > $6)
            ORDER BY l.phone_number, l.id LIMIT $7
            """,
            account_id,
            name,
            low,
            high,
            after_phone,
            after_id,
            limit + 1,
        )
    if len(rows) <= limit and not phone_prefix:
        after_id = after[1] if after and after[0] is None else 0
        rows += await conn.fetch(
            _RECIPIENT + " AND l.phone_number IS NULL AND l.id > $3 ORDER BY l.id LIMIT $4",
            account_id,
            name,
            after_id,
            limit + 1 - len(rows),
        )
    items = [_recipient(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last["phone_number"], last["id"])
    return items, next_cursor


async def all_recipients(
    conn: Executor, account_id: int, name: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every recipient of the campaign, a batch at a time (for the CSV file)."""
    cursor = None
    while True:
        batch, cursor = await recipients(
            conn, account_id, name, phone_prefix=None, cursor=cursor, limit=EXPORT_BATCH
        )
        if batch:
            yield batch
        if cursor is None:
            return


# -- clicks ------------------------------------------------------------------------------

CLICK_COLUMNS = (
    "event_id",
    "tracking_url_id",
    "phone_number",
    "client_ref",
    "clicked_at",
    "ip",
    "browser",
    "os",
    "device_type",
    "device_name",
    "device_manufacturer",
    "is_bot",
    "user_agent",
    "referer",
    "warning_page_served",
    "method",
    "target_url",
    "country",
    "region",
)


async def all_clicks(
    conn: Executor, account_id: int, name: str, *, batch: int = EXPORT_BATCH
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Every click of the campaign, oldest first, a batch at a time (keyset on clicks_campaign).

    Each batch is its own query, so an export holds no transaction open and
    lends its connection back between batches.
    """
    after: tuple[datetime, Any] | None = None
    while True:
        rows = await conn.fetch(
            """
            SELECT event_id, link_id, phone_number, client_ref, clicked_at, client_ip, browser,
                   os, device_type, device_name, device_manufacturer, is_bot, user_agent,
                   referer, warning_page_served, method, target_url, country, region
            FROM clicks
            WHERE account_id = $1 AND client_identifier = $2
              AND ($3::timestamptz IS NULL OR (clicked_at, event_id) > ($3, $4::uuid))
            ORDER BY clicked_at, event_id
            LIMIT $5
            """,
            account_id,
            name,
            after[0] if after else None,
            after[1] if after else None,
            batch,
        )
        if not rows:
            return
        yield [tuple(row.values()) for row in rows]
        if len(rows) < batch:
            return
        after = (rows[-1]["clicked_at"], rows[-1]["event_id"])
