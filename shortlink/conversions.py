"""Conversions (seed 000): a recipient's response to a message, positive or negative.

The first human tap of a link records one itself (`link_click`, positive), in the
forwarder's transaction that records the first click (forwarder.recorder). The
enterprise posts the ones that happened out of our sight (a purchase, a sign-up,
a refusal) through the API; `record()` stores one in the caller's transaction
with everything that follows from it:

- the campaign counters the statistics read (campaign_conversions per event and
  currency, campaign_stats.converted_links: links with a positive enterprise
  conversion, counted once each through converted_links), never updated for
  `link_click` (the unique clicks count those already);
- a delivery for the account's endpoint, if it asked for conversions: a message
  state event (new_state CONVERTED) that the forwarder sends, signs, retries and
  dead-letters like every delivery. The API never calls a customer itself.

What a conversion may hold is checked here too: an event of 1 to 64 characters
(`link_click` is reserved), a disposition, a value of 0 to 10^15 with an ISO 4217
currency (both or neither; the list is the `iso4217` package's, the published
SIX table), an RFC 3339 time with its offset, metadata of at most 4 KiB nested at
most 32 levels (deeper is no one's metadata, and orjson will not write more than
254).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import iso4217
import orjson

from shortlink import partitions
from shortlink.db import Connection, Executor
from shortlink.exceptions import AmbiguousClientRef, InvalidInput, LinkNotFound
from shortlink.timestamps import rfc3339

LINK_CLICK = "link_click"  # recorded on the first human tap; not for the enterprise to post
DISPOSITIONS = ("positive", "negative")
CURRENCIES = tuple(sorted(currency.code for currency in iso4217.Currency))
MAX_EVENT = 64
MAX_VALUE = 10**15
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 32  # the metadata object itself is level 1
MAX_TIME_LENGTH = 64
# occurred_at is refused in a year before 1970 (as written) or later than a day from now
# (clock skew): such a time is a client's mistake, and it keeps every time a Python
# datetime can hold. The year is a pattern the OpenAPI document states; "a day from now"
# moves, so the document can only say it in words.
LATEST_AHEAD = timedelta(days=1)
FORMAT = "conversion"  # deliveries.format of a conversion's state event

# RFC 3339 date-time (the JSON Schema `date-time` format): a full date, T, a time,
# and Z or a numeric offset; the grammar rfc3339-validator checks, digits in ASCII.
_TIME_OF_DAY = (
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
OCCURRED_AT_PATTERN = r"^(?:19[7-9][0-9]|[2-9][0-9]{3})" + _TIME_OF_DAY
_OCCURRED_AT = re.compile(OCCURRED_AT_PATTERN)
_RFC3339 = re.compile(r"^[0-9]{4}" + _TIME_OF_DAY)


def event_name(raw: str) -> str:
    """An event the enterprise may post, or InvalidInput."""
    if not 1 <= len(raw) <= MAX_EVENT:
        raise InvalidInput(f"must be 1 to {MAX_EVENT} characters")
    if raw == LINK_CLICK:
        raise InvalidInput(f"{LINK_CLICK!r} is recorded by the service on the first tap")
    return raw


def disposition(raw: str) -> str:
    if raw not in DISPOSITIONS:
        raise InvalidInput(f"must be one of {', '.join(DISPOSITIONS)}")
    return raw


def currency(raw: str) -> str:
    if raw not in CURRENCIES:
        raise InvalidInput("must be an ISO 4217 currency code, in capitals (EUR, USD, JPY, ...)")
    return raw


def occurred_at(raw: str, *, now: datetime) -> datetime:
    """An RFC 3339 time with its offset, within the accepted window; or InvalidInput."""
    if _OCCURRED_AT.fullmatch(raw) is None:
        if _RFC3339.fullmatch(raw) is not None:
            raise InvalidInput("must not be in a year before 1970")
        raise InvalidInput(
            "must be an RFC 3339 date-time with its offset, e.g. 2026-05-01T09:30:00Z"
        )
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(f"is not a date-time ({exc})") from None
    if moment > now + LATEST_AHEAD:
        raise InvalidInput("must not be more than a day in the future")
    return moment


def metadata(value: Any) -> str:
    """The metadata object as stored (compact JSON), or InvalidInput."""
    if not isinstance(value, dict):
        raise InvalidInput("must be a JSON object")
    if _deeper_than(value, MAX_METADATA_DEPTH):
        raise InvalidInput(f"must be nested at most {MAX_METADATA_DEPTH} levels deep")
    encoded = orjson.dumps(value)
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"is {len(encoded):,} bytes as JSON; at most {MAX_METADATA_BYTES:,} (4 KiB)"
        )
    return encoded.decode()


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels in `value` (without recursion:
    what a request may hold is as deep as orjson reads, 1,024 levels)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_default(value: Any) -> Any:
    """orjson `default`: a numeric value as the exact JSON number it is."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True)
class NewConversion:
    event: str
    disposition: str
    value: Decimal | None
    currency: str | None
    occurred_at: datetime
    metadata: str | None  # JSON text


_LINK = """
    SELECT l.id, l.token, l.client_ref, l.client_identifier, l.phone_number, l.target_url,
           coalesce(
               (SELECT f.clicked_at FROM first_clicks f WHERE f.link_id = l.id),
               l.first_clicked_at
           ) AS first_clicked_at
    FROM links l
"""


async def find_link(
    conn: Executor, account_id: int, *, token: str | None, client_ref: str | None
) -> asyncpg.Record:
    """The account's link named by its token or by its message id (which must name
    exactly one link: AmbiguousClientRef otherwise); LinkNotFound if there is none."""
    if token is not None:
        periods = partitions.periods_in(
            "l.period", partitions.token_periods(token, datetime.now(UTC))
        )
        rows = await conn.fetch(
            f"{_LINK} WHERE l.token = $1 AND l.account_id = $2 AND {periods}",
            token,
            account_id,
        )
    else:
        rows = await conn.fetch(
            f"{_LINK} WHERE l.account_id = $1 AND l.client_ref = $2 ORDER BY l.id LIMIT 2",
            account_id,
            client_ref,
        )
    if not rows:
        raise LinkNotFound("no link of this account has that token or client_ref")
    if len(rows) > 1:
        raise AmbiguousClientRef(
            "this client_ref names several links of the account: name the link by its token"
        )
    return rows[0]


async def record(
    conn: Connection, account_id: int, link: asyncpg.Record, new: NewConversion
) -> asyncpg.Record:
    """Store an enterprise conversion of `link`, count it, and make the delivery for an
    endpoint that asked for conversions; in the caller's transaction. The stored row."""
    row = await conn.fetchrow(
        """
        INSERT INTO conversions (link_id, event, disposition, value, currency, occurred_at,
                                 metadata)
        VALUES ($1, $2, $3, $4, $5, $6, $7::json)
        RETURNING id, link_id, event, disposition, value, currency, occurred_at, metadata
        """,
        link["id"],
        new.event,
        new.disposition,
        new.value,
        new.currency,
        new.occurred_at,
        new.metadata,
    )
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("conversion insert returned nothing")
    positive = new.disposition == "positive"
    campaign = link["client_identifier"] or ""
    await conn.execute(
        """
        INSERT INTO campaign_conversions (account_id, campaign, event, currency, positive,
                                          negative, value)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (account_id, campaign, event, currency) DO UPDATE SET
            positive = campaign_conversions.positive + excluded.positive,
            negative = campaign_conversions.negative + excluded.negative,
            value = campaign_conversions.value + excluded.value
        """,
        account_id,
        campaign,
        new.event,
        new.currency or "",
        int(positive),
        int(not positive),
        new.value if positive and new.value is not None else Decimal(0),
    )
    if positive:
        await conn.execute(
            """
            WITH first AS (
                INSERT INTO converted_links (link_id, converted_at) VALUES ($3, now())
                ON CONFLICT (link_id) DO NOTHING
                RETURNING link_id
            )
            INSERT INTO campaign_stats (account_id, campaign, converted_links)
            SELECT $1, $2, 1 FROM first
            ON CONFLICT (account_id, campaign)
            DO UPDATE SET converted_links = campaign_stats.converted_links + 1
            """,
            account_id,
            campaign,
            link["id"],
        )
    endpoint_id = await conn.fetchval(
        "SELECT id FROM endpoints WHERE account_id = $1 AND enabled AND conversions", account_id
    )
    if endpoint_id is not None:
        request_id = str(uuid.uuid4())
        await conn.execute(
            """
            INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                    oldest_click_at)
            VALUES ($1, $2, $3, $4, 0, now())
            """,
            request_id,
            endpoint_id,
            FORMAT,
            state_event(request_id, link, row),
        )
    return row


async def of_links(conn: Executor, link_ids: list[int]) -> dict[int, list[asyncpg.Record]]:
    """The conversions of these links (link_click included), each link's in time order."""
    rows = await conn.fetch(
        """
        SELECT id, link_id, event, disposition, value, currency, occurred_at, metadata
        FROM conversions WHERE link_id = ANY($1::bigint[])
        ORDER BY link_id, occurred_at, id
        """,
        link_ids,
    )
    found: dict[int, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(row["link_id"], []).append(row)
    return found


def seconds_since_first_click(occurred: datetime, first_click: datetime | None) -> float | None:
    """Seconds from the link's first human tap to the conversion (negative if before)."""
    if first_click is None:
        return None
    return round((occurred - first_click).total_seconds(), 3)


def public(link: asyncpg.Record, row: asyncpg.Record) -> dict[str, Any]:
    """A conversion as the API shows it (`link`: id, token, client_ref, first_clicked_at).
    Values are Decimal: dump with `default=json_default`."""
    return {
        "conversion_id": row["id"],
        "tracking_url_id": link["id"],
        "token": link["token"],
        "client_ref": link["client_ref"],
        "event": row["event"],
        "disposition": row["disposition"],
        "value": row["value"],
        "currency": row["currency"],
        "occurred_at": rfc3339(row["occurred_at"]),
        "seconds_since_first_click": seconds_since_first_click(
            row["occurred_at"], link["first_clicked_at"]
        ),
        "metadata": orjson.Fragment(row["metadata"]) if row["metadata"] is not None else None,
    }


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def state_event(request_identifier: str, link: asyncpg.Record, row: asyncpg.Record) -> bytes:
    """The stored body of a conversion's delivery: seed 000's message state event, the
    new state CONVERTED, beside CLICKTHRU (forwarder.formats puts it in its envelope
    with the attempt counter at each send)."""
    phone = link["phone_number"]
    value = row["value"]
    return orjson.dumps(
        {
            "fld-val-list": {
                "previous_state": "CLICKTHRU" if link["first_clicked_at"] else "DELIVERED",
                "new_state": "CONVERTED",
                "message_id": link["client_ref"],
                "message_request_id": request_identifier,
                "to_address": f"+{phone}" if phone else None,
                "tracked_url": link["target_url"],
                "tracking_url_id": link["id"],
                "client_identifier": link["client_identifier"],
                "conversion_id": row["id"],
                "event": row["event"],
                "disposition": row["disposition"],
                "value": value,
                "currency": row["currency"],
                "occurred_at": _utc(row["occurred_at"]),
                "seconds_since_first_click": seconds_since_first_click(
                    row["occurred_at"], link["first_clicked_at"]
                ),
                "metadata": orjson.Fragment(row["metadata"])
                if row["metadata"] is not None
                else None,
                "reason_code": "200",
                "reason_description": "SUCCESS",
            }
        },
        default=json_default,
    )
