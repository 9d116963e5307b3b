"""Idempotency-Key: a retried create returns the first answer instead of creating again.

The key row is inserted in the same transaction as the links. A second request
with the same key waits on that row until the first commits, then finds the
stored answer and returns it (with `Idempotent-Replayed: true`). If the first
fails, its transaction takes the key row with it and the retry starts afresh.
The same key with a different body is a 422. Keys are kept for 24 hours.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from shortlink.api import render
from shortlink.api.errors import ApiError, ValidationFailed
from shortlink.db import Connection
from shortlink.pool import POOL

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
# 1 to 255 visible ASCII characters, spaces inside allowed (the OpenAPI document's pattern).
KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
_KEY = re.compile(KEY_PATTERN)
KEEP_HOURS = 24
_PURGE_EVERY = 3600.0

Action = Callable[[Connection], Awaitable[tuple[int, bytes]]]


def _json(status: int, body: bytes, replayed: bool = False) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return render.json_response(status, body, headers)


async def respond(
    request: web.Request, account_id: int, raw_body: bytes, action: Action
) -> web.Response:
    """Run `action` (which creates and returns (status, JSON body)) at most once per key."""
    pool: asyncpg.Pool = request.app[POOL]
    key = request.headers.get(HEADER)
    if key is None:
        async with pool.acquire() as conn, conn.transaction():
            status, body = await action(conn)
        return _json(status, body)
    if _KEY.fullmatch(key) is None:
        raise ValidationFailed(
            [{"field": HEADER, "message": "must be 1 to 255 visible ASCII characters"}]
        )
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.path.encode() + b"\n" + raw_body
    ).digest()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            DELETE FROM idempotency_keys
            WHERE account_id = $1 AND key = $2 AND created_at < now() - make_interval(hours => $3)
            """,
            account_id,
            key,
            KEEP_HOURS,
        )
        fresh = await conn.fetchval(
            """
            INSERT INTO idempotency_keys (account_id, key, request_hash, status, response)
            VALUES ($1, $2, $3, 0, '') ON CONFLICT DO NOTHING RETURNING true
            """,
            account_id,
            key,
            fingerprint,
        )
        if not fresh:
            row = await conn.fetchrow(
                """
                SELECT request_hash, status, response FROM idempotency_keys
                WHERE account_id = $1 AND key = $2
                """,
                account_id,
                key,
            )
            if row is None:  # pragma: no cover - the other request rolled back just now
                raise ApiError(
                    409, "conflict", "a request with this key just failed; send it again"
                )
            if bytes(row["request_hash"]) != fingerprint:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    f"this {HEADER} was used for a different request",
                )
            return _json(row["status"], bytes(row["response"]), replayed=True)
        status, body = await action(conn)
        await conn.execute(
            """
            UPDATE idempotency_keys SET status = $3, response = $4
            WHERE account_id = $1 AND key = $2
            """,
            account_id,
            key,
            status,
            body,
        )
    return _json(status, body)
