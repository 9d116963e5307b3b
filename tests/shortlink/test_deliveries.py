"""Deliveries as customers and operators see them: the listing, resending dead letters, one
delivery's status, against the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from shortlink.accounts import create_account
from shortlink.deliveries import (
    MAX_ERROR_CHARS,
    last_error_text,
    list_deliveries,
    retry_dead,
    status_of,
)
from shortlink.endpoints import callback_endpoint
from tests.forwarder.endpoint import set_endpoint
from tests.infra import unique_name

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def endpoint_of(db: asyncpg.Connection, account_id: int) -> int:
    """The id of the account's endpoint, made for the test."""
    return await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")


async def add(
    db: asyncpg.Connection,
    endpoint_id: int,
    status: str = "pending",
    *,
    created_at: datetime = T0,
    **fields: object,
) -> str:
    """A delivery row as the forwarder would leave it; its RequestIdentifier."""
    request_id = str(uuid.uuid4())
    await db.execute(
        """
        INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                oldest_click_at, status, attempts, last_error, last_status,
                                created_at, delivered_at, next_attempt_at)
        VALUES ($1, $2, 'json', '{}', $3, $4, $5, $6, $7, $8, $4, $9, $10)
        """,
        uuid.UUID(request_id),
        endpoint_id,
        fields.get("clicks", 1),
        created_at,
        status,
        fields.get("attempts", 0),
        fields.get("last_error"),
        fields.get("last_status"),
        created_at + timedelta(seconds=1) if status == "delivered" else None,
        fields.get("next_attempt_at", created_at),
    )
    return request_id


async def test_the_listing_is_newest_first_with_every_field(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Deliveries are listed newest first; a pending one says when it is tried next, a
    delivered one when it arrived, and an endpoint's delivery has no callback_url."""
    endpoint = await endpoint_of(db, account_id)
    old = await add(db, endpoint, "delivered", created_at=T0, clicks=100, attempts=1)
    new = await add(
        db,
        endpoint,
        "pending",
        created_at=T0 + timedelta(minutes=1),
        attempts=2,
        last_error="HTTP 503",
        last_status=503,
        next_attempt_at=T0 + timedelta(minutes=5),
    )
    listed = await list_deliveries(db, account_id)
    assert [d["request_identifier"] for d in listed] == [new, old]
    assert listed[0] == {
        "request_identifier": new,
        "format": "json",
        "clicks": 1,
        "status": "pending",
        "attempts": 2,
        "next_attempt_at": "2026-03-01T12:05:00Z",
        "last_error": "HTTP 503",
        "last_status": 503,
        "created_at": "2026-03-01T12:01:00Z",
        "delivered_at": None,
        "callback_url": None,
    }
    assert listed[1]["next_attempt_at"] is None  # only a pending delivery is tried again
    assert listed[1]["delivered_at"] == "2026-03-01T12:00:01Z"
    assert listed[1]["clicks"] == 100


async def test_the_listing_filters_by_status_and_pages_by_time(
    db: asyncpg.Connection, account_id: int
) -> None:
    """`status` keeps one status; `before` keeps those created strictly earlier; `limit` caps."""
    endpoint = await endpoint_of(db, account_id)
    ids = [
        await add(db, endpoint, status, created_at=T0 + timedelta(minutes=i))
        for i, status in enumerate(["dead", "delivered", "dead", "pending"])
    ]
    dead = await list_deliveries(db, account_id, status="dead")
    assert [d["request_identifier"] for d in dead] == [ids[2], ids[0]]
    earlier = await list_deliveries(db, account_id, before=T0 + timedelta(minutes=2))
    assert [d["request_identifier"] for d in earlier] == [ids[1], ids[0]]
    assert [d["request_identifier"] for d in await list_deliveries(db, account_id, limit=2)] == [
        ids[3],
        ids[2],
    ]


async def test_an_account_sees_its_callbacks_and_nothing_of_another_account(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Deliveries to the account's callback URLs are its own (with their URL); another
    account's are neither listed, nor resent, nor found by status."""
    endpoint = await endpoint_of(db, account_id)
    callback = await callback_endpoint(
        db, account_id, "http://127.0.0.1:9/callback", allow_private=True
    )
    other = (await create_account(db, unique_name("other"))).account_id
    theirs = await add(db, await endpoint_of(db, other), "dead")
    ours = await add(db, endpoint, created_at=T0)
    by_callback = await add(db, callback, created_at=T0 + timedelta(minutes=1))
    listed = await list_deliveries(db, account_id)
    assert [(d["request_identifier"], d["callback_url"]) for d in listed] == [
        (by_callback, "http://127.0.0.1:9/callback"),
        (ours, None),
    ]
    assert await status_of(db, account_id, theirs) is None
    assert await retry_dead(db, account_id, theirs) == 0
    assert await retry_dead(db, account_id) == 0
    assert await status_of(db, other, theirs) == "dead"


async def test_resending_dead_letters_starts_them_again_and_lifts_the_pause(
    db: asyncpg.Connection, account_id: int
) -> None:
    """retry_dead queues the dead deliveries (or the one named) with attempts from zero,
    due now, keeping their RequestIdentifier; the endpoint's pause is lifted."""
    endpoint = await endpoint_of(db, account_id)
    first = await add(db, endpoint, "dead", attempts=8, last_error="HTTP 500")
    second = await add(db, endpoint, "dead", attempts=8)
    delivered = await add(db, endpoint, "delivered")
    await db.execute(
        "UPDATE endpoints SET paused_until = now() + interval '1 hour' WHERE id = $1", endpoint
    )
    assert await retry_dead(db, account_id, first) == 1
    assert await status_of(db, account_id, first) == "pending"
    assert await status_of(db, account_id, second) == "dead"
    assert await status_of(db, account_id, delivered) == "delivered"
    assert await db.fetchval("SELECT paused_until FROM endpoints WHERE id = $1", endpoint) is None
    row = await db.fetchrow(
        """
        SELECT attempts, next_attempt_at <= now() AS due, last_error FROM deliveries
        WHERE request_identifier = $1
        """,
        uuid.UUID(first),
    )
    assert (row["attempts"], row["due"], row["last_error"]) == (0, True, "HTTP 500")
    assert await retry_dead(db, account_id) == 1  # the other one
    assert await retry_dead(db, account_id) == 0  # none left


async def test_nothing_to_resend_leaves_the_pause(db: asyncpg.Connection, account_id: int) -> None:
    """With no dead letter to resend, the endpoint's pause stays as the last failure left it."""
    endpoint = await endpoint_of(db, account_id)
    await add(db, endpoint, "pending")
    await db.execute(
        "UPDATE endpoints SET paused_until = now() + interval '1 hour' WHERE id = $1", endpoint
    )
    assert await retry_dead(db, account_id) == 0
    assert await db.fetchval("SELECT paused_until FROM endpoints WHERE id = $1", endpoint)


async def test_status_of_an_unknown_delivery_is_none(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A RequestIdentifier the account never had has no status."""
    assert await status_of(db, account_id, str(uuid.uuid4())) is None


def test_a_stored_error_holds_no_nul_and_stays_short() -> None:
    """last_error_text replaces NUL (PostgreSQL text cannot hold it) and cuts long errors."""
    assert last_error_text("HTTP 500: a\x00b") == "HTTP 500: a\N{REPLACEMENT CHARACTER}b"
    assert len(last_error_text("x" * (MAX_ERROR_CHARS + 50))) == MAX_ERROR_CHARS
    assert last_error_text("short") == "short"
