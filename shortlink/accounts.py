"""Accounts and their API keys.

An API key is `sl_` followed by 43 URL-safe characters (256 random bits). Only its
SHA-256 is stored: the key is shown once, when it is created. A plain hash (not a
password KDF) is enough because the key is a full-entropy random secret, not
something a person chose; it also keeps authentication to one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

import asyncpg

from shortlink import changes
from shortlink.db import Connection

KEY_PREFIX = "sl_"
# What new_api_key makes: anything else (other lengths, bytes that were not UTF-8)
# cannot be a key, and is refused without a lookup.
_KEY = re.compile(r"sl_[A-Za-z0-9_-]{43}")


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class NewAccount:
    account_id: int
    name: str
    api_key: str  # shown once


async def create_account(conn: asyncpg.Connection, name: str) -> NewAccount:
    """Create an account and its first API key."""
    async with conn.transaction():
        account_id: int = await conn.fetchval(
            "INSERT INTO accounts (name) VALUES ($1) RETURNING id", name
        )
        key = await _add_key(conn, account_id)
    return NewAccount(account_id, name, key)


async def rotate_key(conn: asyncpg.Connection, account_id: int) -> str | None:
    """Revoke every key of the account and issue a new one; None if no such account."""
    async with conn.transaction():
        exists = await conn.fetchval(
            "SELECT true FROM accounts WHERE id = $1 FOR UPDATE", account_id
        )
        if not exists:
            return None
        await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL",
            account_id,
        )
        return await _add_key(conn, account_id)


async def disable_account(conn: asyncpg.Connection, account_id: int) -> bool:
    """Disable the account: its keys stop working. False if no such account."""
    status = await conn.execute(
        "UPDATE accounts SET disabled_at = coalesce(disabled_at, now()) WHERE id = $1",
        account_id,
    )
    return bool(status == "UPDATE 1")


async def current_key(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> int | None:
    """The id of the account's newest key that is not revoked, or None (no such key, or
    the account is disabled): what a dashboard link is made under."""
    key_id: int | None = await conn.fetchval(
        """
        SELECT k.id FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE a.id = $1 AND a.disabled_at IS NULL AND k.revoked_at IS NULL
        ORDER BY k.id DESC LIMIT 1
        """,
        account_id,
    )
    return key_id


def is_key_shaped(key: str) -> bool:
    """Whether `key` has the form of an API key (sl_ and 43 URL-safe characters): only
    such a string is hashed and looked up."""
    return _KEY.fullmatch(key) is not None


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> int | None:
    """The account id behind an API key, or None when the key is unknown, revoked or disabled."""
    if not is_key_shaped(key):
        return None
    account_id: int | None = await conn.fetchval(
        """
        SELECT a.id FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.disabled_at IS NULL
        """,
        hash_api_key(key),
    )
    return account_id


async def _add_key(conn: asyncpg.Connection, account_id: int) -> str:
    key = new_api_key()
    await conn.execute(
        "INSERT INTO api_keys (account_id, key_hash, key_prefix) VALUES ($1, $2, $3)",
        account_id,
        hash_api_key(key),
        key[: len(KEY_PREFIX) + 6],
    )
    return key


# What an account keeps, and for how long (migration 0011; issue 23). The bounds are
# the table's CHECKs, stated once more here for the API's messages.
MAX_LINK_LIFETIME_DAYS = 365  # a link's whole life fits its token's period (docs/tokens.md)
MAX_CLICK_RETENTION_DAYS = 1825
IP_STORAGE_MODES = ("full", "truncated", "none")


@dataclass(frozen=True)
class Settings:
    """An account's storage settings, as GET /v1/account shows them."""

    link_lifetime_days: int
    click_retention_days: int
    ip_storage: str
    expired_url: str | None

    def public(self) -> dict[str, object]:
        return {
            "link_lifetime_days": self.link_lifetime_days,
            "click_retention_days": self.click_retention_days,
            "ip_storage": self.ip_storage,
            "expired_url": self.expired_url,
        }


_SETTINGS = "link_lifetime_days, click_retention_days, ip_storage, expired_url"
UNSET: object = object()  # update_settings: leave this setting as it is


async def get_settings(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> Settings:
    """The account's settings (the account exists: it was authenticated)."""
    row = await conn.fetchrow(f"SELECT {_SETTINGS} FROM accounts WHERE id = $1", account_id)
    if row is None:
        raise LookupError(f"no account {account_id}")
    return Settings(*row)


async def update_settings(
    conn: Connection,
    account_id: int,
    *,
    link_lifetime_days: int | None = None,
    click_retention_days: int | None = None,
    ip_storage: str | None = None,
    expired_url: object = UNSET,
) -> Settings:
    """Change the given settings (None: unchanged; expired_url may be set to None); a
    changed expired_url reaches the redirect workers as the transaction commits."""
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_SETTINGS} FROM accounts WHERE id = $1 FOR UPDATE", account_id
        )
        if old is None:
            raise LookupError(f"no account {account_id}")
        url = old["expired_url"] if expired_url is UNSET else expired_url
        if url is not None and not isinstance(url, str):
            raise TypeError("expired_url must be a string or None")
        row = await conn.fetchrow(
            f"""
            UPDATE accounts SET link_lifetime_days = coalesce($2, link_lifetime_days),
                                click_retention_days = coalesce($3, click_retention_days),
                                ip_storage = coalesce($4, ip_storage),
                                expired_url = $5
            WHERE id = $1
            RETURNING {_SETTINGS}
            """,
            account_id,
            link_lifetime_days,
            click_retention_days,
            ip_storage,
            url,
        )
        if url != old["expired_url"]:
            await changes.notify_account(conn, account_id, url)
    if row is None:  # pragma: no cover - the row was locked above
        raise LookupError(f"no account {account_id}")
    return Settings(*row)


DEFAULT_LINK_LIFETIME_DAYS = 90  # the column's default (seed 001)


async def link_lifetime_days(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> int:
    """How long the account's links live when a request names no lifetime of its own (the
    default for an account that does not exist: the CLI does not check)."""
    days: int | None = await conn.fetchval(
        "SELECT link_lifetime_days FROM accounts WHERE id = $1", account_id
    )
    return DEFAULT_LINK_LIFETIME_DAYS if days is None else days
