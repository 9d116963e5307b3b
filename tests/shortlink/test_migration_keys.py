"""The keys and audit migration: a key made before it keeps working, with every scope."""

from __future__ import annotations

import asyncpg

from shortlink import accounts, schema


async def test_a_key_made_before_scopes_keeps_every_scope(empty_database_url: str) -> None:
    """A key stored before the migration authenticates after it, holds every scope, and
    is counted against the default rate limit."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = schema.load_migrations()
        ours = next(m for m in migrations if m.name == "api_keys_audit")
        for migration in migrations[: ours.version - 1]:
            await conn.execute(migration.sql)
        key = accounts.new_api_key()
        account_id = await conn.fetchval("INSERT INTO accounts (name) VALUES ('old') RETURNING id")
        await conn.execute(
            "INSERT INTO api_keys (account_id, key_hash, key_prefix) VALUES ($1, $2, $3)",
            account_id,
            accounts.hash_api_key(key),
            key[: accounts.PREFIX_LENGTH],
        )
        await conn.execute(ours.sql)
        use = await accounts.use_key(conn, key, default_limit=5)
        assert use is not None
        assert use.account_id == account_id
        assert use.scopes == frozenset(accounts.SCOPES)
        assert (use.limit, use.used, use.remaining) == (5, 1, 4)
        [listed] = await accounts.list_keys(conn, account_id)
        assert listed["scopes"] == list(accounts.SCOPES)
        assert listed["last_used_at"] is not None
    finally:
        await conn.close()
