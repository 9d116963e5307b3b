"""Branded short domains: an account's own short host names (issue 25).

A domain is named by its normalised form (`normalise`: IDNA 2008 with the UTS 46
mapping through the `idna` package, lower case, no trailing dot, no port, no IP
literal, never SHORT_DOMAIN). It belongs to one account at a time. It is added
unverified with a random verification value; the account proves it holds the
name by publishing that value as the TXT record `_shortlink-challenge.<name>`,
which `txt_values` looks up (dnspython, through DNS_RESOLVERS when set). Only a
verified domain carries links, answers redirects and gets a certificate.

Every change notifies the redirect workers in its transaction
(shortlink.changes.notify_domain); they keep the verified domains in memory
(shortlink.redirect.domains).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna
import orjson
from yarl import URL

from shortlink import changes
from shortlink.db import Connection, Executor
from shortlink.exceptions import DnsLookupFailed, DomainGone, DomainTaken, InvalidInput
from shortlink.timestamps import rfc3339

MAX_NAME = 253  # characters of a normalised name (DNS's limit)
MAX_RAW_NAME = 1000  # characters of a name as sent, before normalising
MAX_DOCUMENT_BYTES = 65_536  # an app-link document, as JSON
MAX_DOMAINS_PER_ACCOUNT = 100
CHALLENGE_PREFIX = "_shortlink-challenge."
MAX_TXT_SHOWN = 20  # TXT values a failed verification reports
MAX_TXT_LENGTH = 255  # characters of each
DOCUMENTS = ("apple_app_site_association", "assetlinks")

COLUMNS = """
    name, account_id, verified, is_default, verification, not_found_url, expired_url,
    apple_app_site_association::text AS apple_app_site_association,
    assetlinks::text AS assetlinks, created_at, verified_at
"""


def host_of(short_domain: str) -> str:
    """SHORT_DOMAIN's host, without its port, in lower case; an internationalised name in
    its IDNA form, as browsers send it in Host."""
    host = short_domain.lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    host = host.partition(":")[0].rstrip(".")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError):
            pass  # not a usable name: compared as written (it matches no Host then)
    return host


def normalise(raw: str, short_domain: str | None = None) -> str:
    """The domain's stored form, or InvalidInput saying why `raw` is not a usable name."""
    if len(raw) > MAX_RAW_NAME:
        raise InvalidInput(f"must be at most {MAX_RAW_NAME} characters")
    name = raw.strip().rstrip(".")
    if not name:
        raise InvalidInput("must be a host name")
    if any(c in name for c in "/@?#\\ \t\r\n"):
        raise InvalidInput("must be a host name alone, not a URL")
    if ":" in name or name.startswith("["):
        raise InvalidInput("must be a host name without a port, not an IP address")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise InvalidInput("must be a host name, not an IP address")
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidInput(f"is not a valid internationalised host name ({exc})") from None
    # A full stop IDNA maps (U+3002, U+FF0E, U+FF61) may end the name only once encoded.
    ascii_name = ascii_name.rstrip(".")
    if not ascii_name:
        raise InvalidInput("must be a host name")
    if len(ascii_name) > MAX_NAME - len(CHALLENGE_PREFIX):
        # Longer, and its verification record's name would be over DNS's 253.
        raise InvalidInput(
            f"must be at most {MAX_NAME - len(CHALLENGE_PREFIX)} characters once encoded"
        )
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidInput("must have at least two labels (go.brand.example)")
    if labels[-1].isdigit():  # 127.1, 10.0.0.1: read as addresses by resolvers
        raise InvalidInput("must be a host name, not an IP address")
    if short_domain is not None and ascii_name == host_of(short_domain):
        raise InvalidInput("is the shared short domain, which every account uses already")
    return ascii_name


def points_at(url: str, name: str) -> bool:
    """Whether the (checked, normalised) http(s) `url` is on the domain `name`, any port."""
    host = URL(url).raw_host or ""  # IDNA-encoded, as the stored name
    return host.lower().rstrip(".") == name


def display_name(name: str) -> str:
    """A stored name as people read it (Unicode), or the name itself."""
    try:
        return str(idna.decode(name))
    except (idna.IDNAError, UnicodeError):
        return name


def document(raw: Any) -> str:
    """An app-link document as compact JSON text: an object or an array of bounded size."""
    if not isinstance(raw, dict | list):
        raise InvalidInput("must be a JSON object or array")
    try:
        text = orjson.dumps(raw)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"cannot be stored as JSON ({exc})") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"must be at most {MAX_DOCUMENT_BYTES} bytes as JSON")
    # PostgreSQL's jsonb cannot hold NUL, in a key or a value (looked for only when the
    # JSON text may hold one: a literal backslash and "u0000" reads the same).
    if b"\\u0000" in text and _has_nul(raw):
        raise InvalidInput("must not contain NUL characters")
    return text.decode()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def new_verification() -> str:
    return "shortlink-verify=" + secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Nameserver:
    address: str
    port: int = 53


def parse_resolvers(text: str) -> tuple[Nameserver, ...]:
    """DNS_RESOLVERS: comma-separated `address`, `address:port` or `[v6]:port`."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        address, port = part, "53"
        if part.startswith("["):
            address, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif part.count(":") == 1:
            address, _, port = part.partition(":")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise InvalidInput(f"{part!r}: an IP address, optionally with :port") from None
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65_535):
            raise InvalidInput(f"{part!r}: the port must be 1 to 65535")
        found.append(Nameserver(address, int(port)))
    return tuple(found)


async def txt_values(
    name: str, resolvers: Sequence[Nameserver] = (), *, lifetime: float = 5.0
) -> list[str]:
    """The TXT values of `name` ([] when it has none), or DnsLookupFailed."""
    try:
        # Inside: with no resolvers given, a machine without /etc/resolv.conf raises here.
        resolver = dns.asyncresolver.Resolver(configure=not resolvers)
        if resolvers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(server.address, server.port) for server in resolvers
            ]
        answer = await resolver.resolve(name, dns.rdatatype.TXT, lifetime=lifetime)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsLookupFailed(f"{name}: {type(exc).__name__}") from None
    values = []
    for record in answer:
        strings = getattr(record, "strings", ())
        values.append(b"".join(strings).decode("utf-8", "replace"))
    return values


def public(row: asyncpg.Record) -> dict[str, Any]:
    """A domain as the API shows it."""
    name = row["name"]
    documents = {
        field: None if row[field] is None else orjson.loads(row[field]) for field in DOCUMENTS
    }
    return {
        "domain": name,
        "display_name": display_name(name),
        "verified": row["verified"],
        "default": row["is_default"],
        "verification": {
            "type": "dns-txt",
            "name": CHALLENGE_PREFIX + name,
            "value": row["verification"],
        },
        "not_found_url": row["not_found_url"],
        "expired_url": row["expired_url"],
        **documents,
        "created_at": rfc3339(row["created_at"]),
        "verified_at": rfc3339(row["verified_at"]),
    }


async def _lock_account(conn: Connection, account_id: int) -> None:
    """One domain change of an account at a time: two adds at 99 domains made 101, and two
    defaults set at once met the one-default index (a 500)."""
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)


async def add(
    conn: Connection, account_id: int, name: str, *, verified: bool = False
) -> asyncpg.Record:
    """Add `name` (normalised) to the account: its own claim, unverified unless `verified`
    (operators). DomainTaken when the account has it already or any account has verified
    it; other accounts' unverified claims do not stand in the way (migration 0019)."""
    try:
        async with conn.transaction():
            await _lock_account(conn, account_id)
            count = await conn.fetchval(
                "SELECT count(*) FROM domains WHERE account_id = $1", account_id
            )
            if count >= MAX_DOMAINS_PER_ACCOUNT:
                raise InvalidInput(f"an account has at most {MAX_DOMAINS_PER_ACCOUNT} domains")
            await refuse_if_taken(conn, account_id, name)
            row = await conn.fetchrow(
                f"""
                INSERT INTO domains (name, account_id, verification, verified, verified_at)
                VALUES ($1, $2, $3, $4, CASE WHEN $4 THEN now() END)
                ON CONFLICT (name, account_id) DO NOTHING
                RETURNING {COLUMNS}
                """,
                name,
                account_id,
                new_verification(),
                verified,
            )
            if row is None:
                raise DomainTaken(f"{name} is already added to this account")
            await changes.notify_domain(conn, name)
    except asyncpg.UniqueViolationError:  # verified by another account at the same moment
        raise DomainTaken(f"{name} is verified by another account") from None
    return row


async def refuse_if_taken(conn: Executor, account_id: int, name: str) -> None:
    """DomainTaken when another account has verified `name`."""
    owner = await conn.fetchval("SELECT account_id FROM domains WHERE name = $1 AND verified", name)
    if owner is not None and owner != account_id:
        raise DomainTaken(f"{name} is verified by another account")


async def of_account(conn: Executor, account_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM domains WHERE account_id = $1 ORDER BY name", account_id
    )


async def every(conn: Executor) -> list[asyncpg.Record]:
    """Every domain of every account (the operators' `shortlink domain list`)."""
    return await conn.fetch(f"SELECT {COLUMNS} FROM domains ORDER BY account_id, name")


async def get(conn: Executor, account_id: int, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM domains WHERE name = $1 AND account_id = $2", name, account_id
    )


UNCHANGED: Any = object()


async def update(
    conn: Connection,
    account_id: int,
    name: str,
    *,
    is_default: bool | None = None,
    not_found_url: Any = UNCHANGED,
    expired_url: Any = UNCHANGED,
    apple_app_site_association: Any = UNCHANGED,
    assetlinks: Any = UNCHANGED,
) -> asyncpg.Record | None:
    """Change a domain's settings (None removes a URL or document); None when the account
    has no such domain. Making it the default requires it verified (InvalidInput)."""
    settings = {
        "not_found_url": not_found_url,
        "expired_url": expired_url,
        "apple_app_site_association": apple_app_site_association,
        "assetlinks": assetlinks,
    }
    async with conn.transaction():
        await _lock_account(conn, account_id)
        row = await conn.fetchrow(
            # NO KEY UPDATE: links being made on the domain hold it FOR KEY SHARE (hold)
            # and then want the account row; FOR UPDATE here waited for them while holding
            # that row: a deadlock.
            "SELECT verified FROM domains WHERE name = $1 AND account_id = $2 FOR NO KEY UPDATE",
            name,
            account_id,
        )
        if row is None:
            return None
        if is_default and not row["verified"]:
            raise InvalidInput("only a verified domain can be the default")
        if is_default:
            await conn.execute(
                "UPDATE domains SET is_default = false, updated_at = now()"
                " WHERE account_id = $1 AND is_default AND name <> $2",
                account_id,
                name,
            )
        given = {field: value for field, value in settings.items() if value is not UNCHANGED}
        assignments = ", ".join(
            f"{field} = ${index}::{'jsonb' if field in DOCUMENTS else 'text'}"
            for index, field in enumerate(given, start=4)
        )
        await conn.execute(
            f"""
            UPDATE domains SET is_default = coalesce($3, is_default), updated_at = now()
                {", " + assignments if assignments else ""}
            WHERE name = $1 AND account_id = $2
            """,
            name,
            account_id,
            is_default,
            *given.values(),
        )
        await changes.notify_domain(conn, name)
        return await get(conn, account_id, name)


async def mark_verified(conn: Connection, account_id: int, name: str) -> asyncpg.Record | None:
    """The account's claim verified (None when it has no such domain); DomainTaken when
    another account verified the name first: one verified owner per name."""
    try:
        async with conn.transaction():
            await refuse_if_taken(conn, account_id, name)
            await conn.execute(
                """
                UPDATE domains SET verified = true, verified_at = coalesce(verified_at, now()),
                                   updated_at = now()
                WHERE name = $1 AND account_id = $2
                """,
                name,
                account_id,
            )
            await changes.notify_domain(conn, name)
            return await get(conn, account_id, name)
    except asyncpg.UniqueViolationError:  # verified by another account at the same moment
        raise DomainTaken(f"{name} is verified by another account") from None


async def remove(conn: Connection, account_id: int | None, name: str) -> list[int]:
    """Remove a domain (of `account_id`, or every account's claim of it when None): the
    accounts whose claim was removed (none: no such domain). Its links stop answering:
    their host is no longer served. Waits for links being made on it (hold) to commit."""
    async with conn.transaction():
        rows = await conn.fetch(
            """
            DELETE FROM domains WHERE name = $1 AND ($2::int8 IS NULL OR account_id = $2)
            RETURNING account_id
            """,
            name,
            account_id,
        )
        if rows:
            await changes.notify_domain(conn, name)
    return sorted(row["account_id"] for row in rows)


async def link_domain(conn: Executor, account_id: int, requested: str | None) -> str | None:
    """The domain new links of the account get: `requested` when it is a verified domain of
    the account (else InvalidInput), otherwise the account's default (None: SHORT_DOMAIN)."""
    if requested is None:
        name: str | None = await conn.fetchval(
            "SELECT name FROM domains WHERE account_id = $1 AND is_default AND verified",
            account_id,
        )
        return name
    found = await conn.fetchval(
        "SELECT verified FROM domains WHERE name = $1 AND account_id = $2",
        requested,
        account_id,
    )
    if not found:
        raise InvalidInput("is not a verified domain of this account")
    return requested


async def served(conn: Executor, names: Sequence[str] | None = None) -> list[asyncpg.Record]:
    """What the redirect workers keep of the verified domains (all, or those `names`)."""
    return await conn.fetch(
        """
        SELECT name, account_id, not_found_url, expired_url,
               apple_app_site_association::text AS apple_app_site_association,
               assetlinks::text AS assetlinks
        FROM domains WHERE verified AND ($1::text[] IS NULL OR name = ANY($1::text[]))
        """,
        None if names is None else list(names),
    )


async def is_served(conn: Executor, name: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1 AND verified)", name.lower()
        )
    )


async def hold(conn: Connection, account_id: int, name: str) -> None:
    """Keep the account's verified domain `name` until the transaction ends (its links are
    being made): a removal waits for them to commit. DomainGone when it is no longer one
    (removed since the request looked)."""
    held = await conn.fetchval(
        """
        SELECT true FROM domains WHERE name = $1 AND account_id = $2 AND verified
        FOR KEY SHARE
        """,
        name,
        account_id,
    )
    if not held:
        raise DomainGone(f"{name} is no longer a verified domain of this account")
