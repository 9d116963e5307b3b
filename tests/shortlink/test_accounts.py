"""Accounts and their API keys: a key works until it is rotated or the account disabled."""

from __future__ import annotations

import asyncpg

from shortlink import accounts
from tests.infra import unique_name


async def test_a_new_account_authenticates_with_its_key_and_stores_only_a_hash(
    db: asyncpg.Connection,
) -> None:
    """The key shown once works; the database holds its hash and a short prefix, never the key."""
    made = await accounts.create_account(db, unique_name("acct"))
    assert accounts.is_key_shaped(made.api_key)
    assert await accounts.authenticate(db, made.api_key) == made.account_id
    row = await db.fetchrow(
        "SELECT key_hash, key_prefix FROM api_keys WHERE account_id = $1", made.account_id
    )
    assert bytes(row["key_hash"]) == accounts.hash_api_key(made.api_key)
    assert made.api_key.startswith(row["key_prefix"])
    assert len(row["key_prefix"]) < len(made.api_key)


async def test_rotating_revokes_every_old_key(db: asyncpg.Connection) -> None:
    """After a rotation only the new key works, and it is the account's current key."""
    made = await accounts.create_account(db, unique_name("acct"))
    before = await accounts.current_key(db, made.account_id)
    new_key = await accounts.rotate_key(db, made.account_id)
    assert new_key is not None
    assert new_key != made.api_key
    assert await accounts.authenticate(db, made.api_key) is None
    assert await accounts.authenticate(db, new_key) == made.account_id
    after = await accounts.current_key(db, made.account_id)
    assert after is not None
    assert before is not None
    assert after > before


async def test_a_disabled_account_has_no_working_key(db: asyncpg.Connection) -> None:
    """Disabling stops its keys and leaves it no current key; disabling twice is still True."""
    made = await accounts.create_account(db, unique_name("acct"))
    assert await accounts.disable_account(db, made.account_id)
    assert await accounts.disable_account(db, made.account_id)
    assert await accounts.authenticate(db, made.api_key) is None
    assert await accounts.current_key(db, made.account_id) is None


async def test_unknown_accounts_and_keys(db: asyncpg.Connection) -> None:
    """No such account: rotate gives None, disable False; an unknown key is None."""
    missing = await db.fetchval("SELECT coalesce(max(id), 0) + 1000 FROM accounts")
    assert await accounts.rotate_key(db, missing) is None
    assert not await accounts.disable_account(db, missing)
    assert await accounts.authenticate(db, accounts.new_api_key()) is None


def test_only_key_shaped_strings_are_looked_up() -> None:
    """sl_ and 43 URL-safe characters; anything else is refused before hashing."""
    assert accounts.is_key_shaped(accounts.new_api_key())
    for odd in ("", "sl_", "sl_" + "a" * 42, "sl_" + "a" * 44, "xx_" + "a" * 43, "sl_" + "!" * 43):
        assert not accounts.is_key_shaped(odd), odd


async def test_a_key_is_still_checked_while_the_database_takes_no_writes(
    db: asyncpg.Connection,
) -> None:
    """While writes fail as read-only (a failover left the pool on a standby), use_key
    authenticates without counting instead of failing; revoked keys stay refused."""
    made = await accounts.create_account(db, "read-only")
    other = await accounts.create_account(db, "revoked")
    await accounts.rotate_key(db, other.account_id)
    await db.execute("SET default_transaction_read_only = on")
    try:
        use = await accounts.use_key(db, made.api_key, default_limit=10)
        assert use is not None
        assert (use.account_id, use.used, use.remaining) == (made.account_id, 0, 10)
        assert await accounts.use_key(db, other.api_key, default_limit=10) is None
    finally:
        await db.execute("SET default_transaction_read_only = off")
