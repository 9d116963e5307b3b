"""Deliveries as customers and operators see them: listing, and resending dead letters.

The forwarder makes and sends deliveries (forwarder.delivery); the API and the
CLI only read them and put dead ones back in the queue. An account's deliveries
are those to its endpoint and to its callback URLs (endpoints rows it owns through
callback_account_id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shortlink.timestamps import rfc3339

STATUSES = ("pending", "delivered", "dead")
MAX_ERROR_CHARS = 1_000
# SQL condition on `endpoints e`: the endpoint is account $1's or one of its callbacks.
_OWNED = "(e.account_id = $1 OR e.callback_account_id = $1)"


def last_error_text(error: str) -> str:
    """An error as stored in last_error: PostgreSQL text cannot hold NUL (an endpoint's
    answer quoted in an error may), and a stored error stays short."""
    return error.replace("\x00", "\N{REPLACEMENT CHARACTER}")[:MAX_ERROR_CHARS]


async def list_deliveries(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: int,
    *,
    status: str | None = None,
    before: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The account's deliveries, newest first (`before`: created strictly earlier)."""
    rows = await conn.fetch(
        f"""
        SELECT d.request_identifier, d.format, d.clicks, d.status, d.attempts,
               d.next_attempt_at, d.last_error, d.last_status, d.created_at, d.delivered_at,
               CASE WHEN e.callback_account_id IS NOT NULL THEN e.url END AS callback_url
        FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
        WHERE {_OWNED}
          AND ($2::text IS NULL OR d.status = $2)
          AND ($3::timestamptz IS NULL OR d.created_at < $3)
        ORDER BY d.created_at DESC, d.request_identifier
        LIMIT $4
        """,
        account_id,
        status,
        before,
        limit,
    )
    return [
        {
            "request_identifier": str(row["request_identifier"]),
            "format": row["format"],
            "clicks": row["clicks"],
            "status": row["status"],
            "attempts": row["attempts"],
            "next_attempt_at": rfc3339(row["next_attempt_at"])
            if row["status"] == "pending"
            else None,
            "last_error": row["last_error"],
            "last_status": row["last_status"],
            "created_at": rfc3339(row["created_at"]),
            "delivered_at": rfc3339(row["delivered_at"]),
            "callback_url": row["callback_url"],
        }
        for row in rows
    ]


async def retry_dead(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: int,
    request_identifier: str | None = None,
) -> int:
    """Queue the account's dead deliveries (or one of them) for sending again; how many.

    Each keeps its RequestIdentifier and body; its attempts start again from zero.
    """
    status = await conn.execute(
        f"""
        UPDATE deliveries d SET status = 'pending', attempts = 0, next_attempt_at = now()
        FROM endpoints e
        WHERE e.id = d.endpoint_id AND {_OWNED} AND d.status = 'dead'
          AND ($2::uuid IS NULL OR d.request_identifier = $2::uuid)
        """,
        account_id,
        request_identifier,
    )
    requeued = int(status.split()[-1])
    if requeued:
        # An operator asked for it now: lift the pause the last failure left.
        await conn.execute(f"UPDATE endpoints e SET paused_until = NULL WHERE {_OWNED}", account_id)
    return requeued


async def status_of(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: int, request_identifier: str
) -> str | None:
    """The status of one of the account's deliveries, or None if it has no such delivery."""
    status: str | None = await conn.fetchval(
        f"""
        SELECT d.status FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
        WHERE {_OWNED} AND d.request_identifier = $2::uuid
        """,
        account_id,
        request_identifier,
    )
    return status
