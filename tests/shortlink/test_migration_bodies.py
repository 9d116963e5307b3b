"""The delivery body migration: bodies are compressed with lz4 where the server has it."""

from __future__ import annotations

import uuid

import asyncpg

from tests.forwarder.endpoint import set_endpoint


async def test_delivery_bodies_use_lz4_where_the_server_has_it(db: asyncpg.Connection) -> None:
    """deliveries.body is set to lz4 on a server built with lz4, and left at pglz otherwise."""
    has_lz4 = await db.fetchval(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    method = await db.fetchval(
        """
        SELECT attcompression::text FROM pg_attribute
        WHERE attrelid = 'deliveries'::regclass AND attname = 'body'
        """
    )
    assert method == ("l" if has_lz4 else "")


async def test_a_large_body_is_stored_compressed_and_read_back_as_written(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A 100-click-sized body is compressed (lz4 or pglz) and comes back byte for byte."""
    endpoint_id = await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    body = b'{"RequestIdentifier":"x","ClickDetails":[%s]}' % b",".join(
        b'{"TrackingUrlId":%d,"UserAgent":"Mozilla/5.0 (Linux; Android 13)"}' % i
        for i in range(1_000)
    )
    request_id = uuid.uuid4()
    await db.execute(
        """
        INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                oldest_click_at)
        VALUES ($1, $2, 'json', $3, 100, now())
        """,
        request_id,
        endpoint_id,
        body,
    )
    stored, size = await db.fetchrow(
        "SELECT body, pg_column_size(body) FROM deliveries WHERE request_identifier = $1",
        request_id,
    )
    assert stored == body
    assert size < len(body) / 4
