"""A campaign's clicks, newest first, page by page (GET /v1/campaigns/{c}/clicks).

Keyset on (clicked_at, event_id) over the clicks_campaign index; narrowed to
one recipient by the links of that phone number.
"""

from __future__ import annotations

import uuid
from typing import Any

from shortlink import partitions
from shortlink.campaigns.cursor import CursorForm, from_micros, to_micros
from shortlink.db import Executor
from shortlink.timestamps import rfc3339

# The position of the last click of a page: its time in microseconds since 1970
# and its event id. The OpenAPI document's pattern, so any cursor the document
# allows can be read (17 digits reach the year 5138).
CURSOR = CursorForm(r"^[0-9]{1,17}-[0-9a-f]{32}$")

_FIELDS = f"""
    c.event_id, c.link_id, c.phone_number, c.client_ref, c.clicked_at, c.client_ip, c.browser,
    c.os, c.device_type, c.device_name, c.device_manufacturer, c.is_bot, c.user_agent,
    c.referer, c.warning_page_served, c.method, c.country, c.region,
    coalesce(c.destination, c.target_url) AS destination, c.rule_index, c.variant_index,
    (SELECT l.domain FROM links l
     WHERE l.id = c.link_id AND l.period = c.link_id >> {partitions.ID_BITS}) AS domain
"""


async def campaign_clicks(
    conn: Executor,
    account_id: int,
    name: str,
    *,
    phone_number: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the campaign's clicks, newest first, and the cursor of the next page
    (BadCursor for a cursor CURSOR cannot read)."""
    after_at, after_id = None, None
    if cursor:
        micros, event_id = CURSOR.decode(cursor)
        after_at, after_id = from_micros(micros), str(uuid.UUID(bytes=event_id))
    rows = await conn.fetch(
        f"""
        SELECT {_FIELDS} FROM clicks c
        WHERE c.account_id = $1 AND c.client_identifier = $2
          AND ($3::text IS NULL OR c.link_id = ANY(
                SELECT id FROM links
                WHERE account_id = $1 AND client_identifier = $2 AND phone_number = $3))
          AND ($4::timestamptz IS NULL OR (c.clicked_at, c.event_id) < ($4, $5::uuid))
        ORDER BY c.clicked_at DESC, c.event_id DESC
        LIMIT $6
        """,
        account_id,
        name,
        phone_number,
        after_at,
        after_id,
        limit + 1,
    )
    page, next_cursor = CURSOR.page(
        rows, limit, lambda last: (to_micros(last["clicked_at"]), last["event_id"].bytes)
    )
    return [_click(row) for row in page], next_cursor


def _click(row: Any) -> dict[str, Any]:
    return {
        "event_id": str(row["event_id"]),
        "tracking_url_id": row["link_id"],
        "phone_number": row["phone_number"],
        "client_ref": row["client_ref"],
        "clicked_at": rfc3339(row["clicked_at"]),
        "ip": str(row["client_ip"]) if row["client_ip"] is not None else None,
        "country": row["country"],
        "region": row["region"],
        "browser": row["browser"],
        "os": row["os"],
        "device_type": row["device_type"],
        "device_name": row["device_name"],
        "device_manufacturer": row["device_manufacturer"],
        "is_bot": row["is_bot"],
        "user_agent": row["user_agent"],
        "referer": row["referer"],
        "warning_page_served": row["warning_page_served"],
        "method": row["method"],
        "destination": row["destination"],
        "rule_index": row["rule_index"],
        "variant_index": row["variant_index"],
        "domain": row["domain"],  # the link's branded domain (null: SHORT_DOMAIN)
    }
