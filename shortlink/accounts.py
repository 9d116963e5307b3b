"""Accounts and their API keys: named, scoped, expiring, rotated with an overlap.

An API key is `sl_` followed by 43 URL-safe characters (256 random bits). Only its
SHA-256 is stored: the key is shown once, when it is created. A plain hash (not a
password KDF) is enough because the key is a full-entropy random secret, not
something a person chose; it also keeps authentication to one indexed lookup.

A key holds scopes (SCOPES); a key made before scopes existed (scopes NULL) holds
every one. A key works until it is revoked or it expires; rotating a key makes a
new one with the same name, scopes and expiry, and revokes the old one
`overlap_seconds` later (its revoked_at in the future), so callers can move over
without a moment in which neither key works.

`use_key` authenticates an API request and counts it against the key's rate
limit in the same statement (one round trip, as authentication alone took): a
fixed one-minute window per key in the UNLOGGED table api_key_windows, so every
API worker of every host on the same database shares the count. last_used_at is
written once per window, not once per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shortlink import changes
from shortlink.db import Connection, Executor
from shortlink.exceptions import TooManyKeys
from shortlink.timestamps import rfc3339

KEY_PREFIX = "sl_"
PREFIX_LENGTH = len(KEY_PREFIX) + 6  # what listings show to tell keys apart
# What each scope allows (shortlink.api.scopes maps every route to one).
SCOPES = (
    "links:write",  # links, messages, campaign changes
    "links:read",  # reading links
    "stats:read",  # statistics, clicks, CSV files, the dashboard
    "conversions:write",  # posting conversions
    "endpoint:write",  # the click endpoint and its deliveries
    "account:admin",  # account settings, the audit log
    "keys:admin",  # API keys
)
MAX_KEY_NAME = 100
MAX_KEYS_PER_ACCOUNT = 100  # keys that still work (not revoked, not expired)
MAX_OVERLAP_SECONDS = 7 * 86_400
# The key is neither revoked (a rotated key's revoked_at may lie ahead) nor expired.
KEY_WORKS = (
    "(k.revoked_at IS NULL OR k.revoked_at > now())"
    " AND (k.expires_at IS NULL OR k.expires_at > now())"
)
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
            """
            UPDATE api_keys SET revoked_at = now()
            WHERE account_id = $1 AND (revoked_at IS NULL OR revoked_at > now())
            """,
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
    """The id of the account's newest key that is not revoked nor expired and may read
    statistics, or None (no such key, or the account is disabled): what a dashboard link
    is made under."""
    key_id: int | None = await conn.fetchval(
        """
        SELECT k.id FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE a.id = $1 AND a.disabled_at IS NULL AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())
          AND (k.scopes IS NULL OR 'stats:read' = ANY (k.scopes))
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
        f"""
        SELECT a.id FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE k.key_hash = $1 AND a.disabled_at IS NULL AND {KEY_WORKS}
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
        key[:PREFIX_LENGTH],
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


# -- named, scoped keys -----------------------------------------------------------


@dataclass(frozen=True)
class KeyUse:
    """An API request's key, as `use_key` found and counted it."""

    key_id: int
    account_id: int
    scopes: frozenset[str]
    limit: int  # requests per minute
    used: int  # requests in this window, this one included
    reset_at: float  # when the window ends (seconds since the epoch)

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


def scopes_of(stored: list[str] | None) -> frozenset[str]:
    """The scopes a key holds: a key made before scopes (NULL) holds all of them."""
    return frozenset(SCOPES) if stored is None else frozenset(stored)


# Authenticate and count in one statement: the key's window row is one more request (a
# new window starts at 1), and last_used_at is written when this minute has none yet.
_USE_AND_COUNT = f"""
        WITH k AS (
            SELECT k.id, k.account_id, k.scopes, k.last_used_at,
                   coalesce(a.rate_limit_per_minute, $2) AS lim
            FROM api_keys k JOIN accounts a ON a.id = k.account_id
            WHERE k.key_hash = $1 AND a.disabled_at IS NULL AND {KEY_WORKS}
        ), w AS (
            INSERT INTO api_key_windows AS w (key_id, window_start, used)
            SELECT id, date_trunc('minute', now()), 1 FROM k
            ON CONFLICT (key_id) DO UPDATE
            SET used = CASE WHEN w.window_start = excluded.window_start
                            THEN least(w.used, 2000000000) + 1 ELSE 1 END,
                window_start = excluded.window_start
            RETURNING w.key_id, w.used, w.window_start
        ), seen AS (
            UPDATE api_keys SET last_used_at = now()
            WHERE id = (SELECT id FROM k)
              AND (last_used_at IS NULL OR last_used_at < date_trunc('minute', now()))
        )
        SELECT k.id, k.account_id, k.scopes, k.lim, w.used,
               extract(epoch FROM w.window_start + interval '1 minute')::float8 AS reset_at
        FROM k JOIN w ON w.key_id = k.id
        """
# The same check without writing anything (the database is read-only for now).
_USE_UNCOUNTED = f"""
        SELECT k.id, k.account_id, k.scopes, coalesce(a.rate_limit_per_minute, $2) AS lim,
               0 AS used,
               extract(epoch FROM date_trunc('minute', now()) + interval '1 minute')::float8
                   AS reset_at
        FROM api_keys k JOIN accounts a ON a.id = k.account_id
        WHERE k.key_hash = $1 AND a.disabled_at IS NULL AND {KEY_WORKS}
        """


async def use_key(
    conn: Executor, key: str, *, default_limit: int, counted: bool = True
) -> KeyUse | None:
    """The working key behind `key`, counted once in its rate-limit window; None when the
    key is unknown, revoked, expired, or its account disabled (then nothing is counted).
    With `counted` false, only checked (on a replica, which takes no writes): its `used`
    is 0."""
    if not is_key_shaped(key):
        return None
    key_hash = hash_api_key(key)
    try:
        row = await conn.fetchrow(
            _USE_AND_COUNT if counted else _USE_UNCOUNTED, key_hash, default_limit
        )
    except asyncpg.ReadOnlySQLTransactionError:
        # The database takes no writes for now (a failover left the pool on a standby, or
        # it was made read-only): the key is checked without being counted, rather than
        # every request refused.
        row = await conn.fetchrow(_USE_UNCOUNTED, key_hash, default_limit)
    if row is None:
        return None
    return KeyUse(
        row["id"],
        row["account_id"],
        scopes_of(row["scopes"]),
        row["lim"],
        row["used"],
        row["reset_at"],
    )


@dataclass(frozen=True)
class NewKey:
    """A key just made: the secret is in `key`, shown this once."""

    id: int
    name: str | None
    key: str
    prefix: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "key": self.key,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "expires_at": rfc3339(self.expires_at),
            "created_at": rfc3339(self.created_at),
        }


def _ordered(scopes: Collection[str]) -> tuple[str, ...]:
    return tuple(scope for scope in SCOPES if scope in scopes)


async def create_key(
    conn: Connection,
    account_id: int,
    *,
    name: str,
    scopes: Collection[str],
    expires_at: datetime | None,
) -> NewKey:
    """A new named key holding `scopes` (known ones, checked by the caller), or TooManyKeys.
    Run it in the caller's transaction (the account row is locked to count its keys)."""
    await _room_for_a_key(conn, account_id)
    return await _insert_key(conn, account_id, name, _ordered(scopes), expires_at)


async def _room_for_a_key(conn: Connection, account_id: int) -> None:
    """TooManyKeys unless the account has fewer than MAX_KEYS_PER_ACCOUNT working keys (a
    rotated key in its overlap counts): the account row stays locked until the caller's
    transaction ends, so concurrent creations and rotations count one after another."""
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)
    working = await conn.fetchval(
        f"SELECT count(*) FROM api_keys k WHERE k.account_id = $1 AND {KEY_WORKS}", account_id
    )
    if working >= MAX_KEYS_PER_ACCOUNT:
        raise TooManyKeys(f"an account may have {MAX_KEYS_PER_ACCOUNT} working keys")


async def _insert_key(
    conn: Connection,
    account_id: int,
    name: str | None,
    scopes: tuple[str, ...] | None,
    expires_at: datetime | None,
) -> NewKey:
    key = new_api_key()
    row = await conn.fetchrow(
        """
        INSERT INTO api_keys (account_id, key_hash, key_prefix, name, scopes, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at
        """,
        account_id,
        hash_api_key(key),
        key[:PREFIX_LENGTH],
        name,
        None if scopes is None else list(scopes),
        expires_at,
    )
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
    return NewKey(
        row["id"],
        name,
        key,
        key[:PREFIX_LENGTH],
        _ordered(SCOPES) if scopes is None else scopes,
        expires_at,
        row["created_at"],
    )


def _listed(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["key_prefix"],
        "scopes": list(_ordered(scopes_of(row["scopes"]))),
        "expires_at": rfc3339(row["expires_at"]),
        "created_at": rfc3339(row["created_at"]),
        "last_used_at": rfc3339(row["last_used_at"]),
        "revokes_at": rfc3339(row["revoked_at"]),
    }


async def list_keys(conn: Executor, account_id: int) -> list[dict[str, Any]]:
    """The account's working keys (never their secrets), newest first; a rotated key shows
    until its overlap ends (`revokes_at`)."""
    rows = await conn.fetch(
        f"""
        SELECT k.id, k.name, k.key_prefix, k.scopes, k.expires_at, k.created_at,
               k.last_used_at, k.revoked_at
        FROM api_keys k WHERE k.account_id = $1 AND {KEY_WORKS}
        ORDER BY k.id DESC
        """,
        account_id,
    )
    return [_listed(row) for row in rows]


async def key_summary(conn: Executor, account_id: int, key_id: int) -> dict[str, Any] | None:
    """One working key of the account as listed, or None."""
    row = await conn.fetchrow(
        f"""
        SELECT k.id, k.name, k.key_prefix, k.scopes, k.expires_at, k.created_at,
               k.last_used_at, k.revoked_at
        FROM api_keys k WHERE k.account_id = $1 AND k.id = $2 AND {KEY_WORKS}
        """,
        account_id,
        key_id,
    )
    return None if row is None else _listed(row)


async def revoke_key(conn: Executor, account_id: int, key_id: int) -> bool:
    """Revoke the account's key now (also one rotated whose overlap has not ended); False
    if it has no such working key."""
    status = await conn.execute(
        f"""
        UPDATE api_keys k SET revoked_at = now()
        WHERE k.account_id = $1 AND k.id = $2 AND {KEY_WORKS}
        """,
        account_id,
        key_id,
    )
    return bool(status == "UPDATE 1")


async def rotate_named_key(
    conn: Connection, account_id: int, key_id: int, overlap_seconds: int
) -> NewKey | None:
    """A new key like `key_id` (name, scopes, expiry); the old one works `overlap_seconds`
    longer. None if the account has no such working key; TooManyKeys at the keys' cap (a
    key in its overlap still works, so rotating must not make keys without bound). Run it
    in a transaction."""
    await _room_for_a_key(conn, account_id)
    row = await conn.fetchrow(
        f"""
        UPDATE api_keys k
        SET revoked_at = least(coalesce(k.revoked_at, 'infinity'),
                               now() + make_interval(secs => $3))
        WHERE k.account_id = $1 AND k.id = $2 AND {KEY_WORKS}
        RETURNING k.name, k.scopes, k.expires_at
        """,
        account_id,
        key_id,
        float(overlap_seconds),
    )
    if row is None:
        return None
    stored = row["scopes"]
    return await _insert_key(
        conn,
        account_id,
        row["name"],
        None if stored is None else _ordered(stored),
        row["expires_at"],
    )


async def set_rate_limit(conn: Executor, account_id: int, per_minute: int | None) -> bool:
    """Set (None: reset to the default) the requests per minute each key of the account
    may make; False if no such account."""
    status = await conn.execute(
        "UPDATE accounts SET rate_limit_per_minute = $2 WHERE id = $1", account_id, per_minute
    )
    return bool(status == "UPDATE 1")
