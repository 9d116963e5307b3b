"""A campaign's recipients: one row per link (each recipient has a link of their own).

Links by (account, campaign, phone number), keyset on (phone_number, id), with
each recipient's taps counted on clicks_link (a recipient's link has few clicks)
and the device of the first tap by a person; recipients without a phone number
come last, by id.
"""

from __future__ import annotations

from typing import Any

from shortlink.campaigns.cursor import CursorForm, text
from shortlink.db import Executor
from shortlink.exceptions import BadCursor

# The position of the last recipient of a page: its link id and "+" and its phone
# number (nothing after the dash: the recipients without a number). A link id is
# below 2**63.
CURSOR = CursorForm(r"^[0-9]{1,19}-(?:2b(?:[0-9a-f]{2}){0,64})?$")
_MAX_ID = 2**63

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
        FROM clicks c
        WHERE c.link_id = l.id AND c.clicked_at >= l.created_at - interval '1 day') AS t ON true
    LEFT JOIN LATERAL (
        SELECT c.device_type, c.os, c.browser FROM clicks c
        WHERE c.link_id = l.id AND c.clicked_at >= l.created_at - interval '1 day'
          AND NOT c.is_bot
        ORDER BY c.clicked_at LIMIT 1) AS f ON true
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


def _position(cursor: str) -> tuple[str | None, int]:
    """The (phone number or None, link id) a cursor holds, or BadCursor."""
    link_id, phone = CURSOR.decode(cursor)
    if link_id >= _MAX_ID:
        raise BadCursor("is not a cursor this API returned (next_cursor)")
    return (text(phone[1:]) if phone else None), link_id


async def recipients(
    conn: Executor,
    account_id: int,
    name: str,
    *,
    phone_prefix: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the campaign's recipients by phone number, and the next page's cursor
    (BadCursor for a cursor CURSOR cannot read)."""
    after = _position(cursor) if cursor else None
    low, high = phone_prefix_range(phone_prefix) if phone_prefix else ("", None)
    rows: list[Any] = []
    if after is None or after[0] is not None:
        after_phone, after_id = after if after else (low, 0)
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
    page, next_cursor = CURSOR.page(rows, limit, _position_of)
    return [_recipient(row) for row in page], next_cursor


def _position_of(row: Any) -> tuple[int, bytes]:
    """A recipient's keyset position: its link id, and "+" and its phone number (or nothing)."""
    phone = row["phone_number"]
    return row["id"], b"" if phone is None else b"+" + phone.encode()
