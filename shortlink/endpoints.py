"""Customer endpoints: where an account's clicks are forwarded, and what is allowed there.

Shared by the API / CLI (which set them) and the forwarder (which posts to them).
An endpoint URL must be http(s) with a host and no credentials; it must not
resolve to a loopback, private, link-local, multicast or otherwise non-public
address unless ALLOW_PRIVATE_ENDPOINTS is on. The forwarder checks the addresses
again at every connection, so a DNS change cannot point it inward later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg

from shortlink.exceptions import ShortlinkError

FORMATS = ("json", "xml", "clickthru")
MODES = ("every", "first")
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
MAX_URL_LENGTH = 2048


class EndpointError(ShortlinkError):
    """An endpoint setting that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PrivateAddressError(EndpointError):
    """The endpoint's host resolves to an address that is not public."""


@dataclass(frozen=True)
class Endpoint:
    id: int
    account_id: int
    url: str
    format: str
    mode: str
    secret: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, object]:
        """What the API shows: everything but the secret itself."""
        return {
            "url": self.url,
            "format": self.format,
            "mode": self.mode,
            "secret_set": self.secret is not None,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "updated_at": self.updated_at.isoformat(),
        }


def validate_url(url: str) -> str:
    """The URL if it is an absolute http(s) URL with a host and no credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise EndpointError("url", f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointError("url", f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointError("url", "must start with https:// or http://")
    if not parts.hostname:
        raise EndpointError("url", "has no host")
    if parts.username is not None or parts.password is not None:
        raise EndpointError("url", "must not contain credentials")
    if port == 0:
        raise EndpointError("url", "port 0 is not allowed")
    return url


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64 of 24-64 bytes)."""
    if not secret.startswith(SECRET_PREFIX):
        raise EndpointError("secret", f"must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise EndpointError("secret", "is not base64 after the prefix") from None
    if not 24 <= len(key) <= 64:
        raise EndpointError("secret", "must encode 24 to 64 bytes")
    return key


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local, ...)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_host(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve `host`; PrivateAddressError if any address is not public (unless allowed)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise EndpointError("url", f"host {host!r} does not resolve ({exc})") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise PrivateAddressError(
                "url",
                f"host {host!r} resolves to non-public address {refused[0]}; "
                "set ALLOW_PRIVATE_ENDPOINTS=true to allow it",
            )
    return addresses


def default_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


_COLUMNS = (
    "id, account_id, url, format, mode, secret, enabled, disabled_reason, created_at, updated_at"
)


async def get_endpoint(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> Endpoint | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM endpoints WHERE account_id = $1", account_id)
    return None if row is None else Endpoint(**dict(row))


async def set_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: int,
    *,
    url: str,
    format: str,
    mode: str,
    secret: str | None,
    enabled: bool,
    allow_private: bool,
) -> Endpoint:
    """Create or replace the account's endpoint after validating every field."""
    validate_url(url)
    if format not in FORMATS:
        raise EndpointError("format", f"must be one of {', '.join(FORMATS)}")
    if mode not in MODES:
        raise EndpointError("mode", f"must be one of {', '.join(MODES)}")
    if secret is not None:
        secret_key(secret)
    parts = urlsplit(url)
    await check_host(parts.hostname or "", default_port(url), allow_private=allow_private)
    row = await conn.fetchrow(
        f"""
        INSERT INTO endpoints (account_id, url, format, mode, secret, enabled)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (account_id) DO UPDATE SET
            url = excluded.url, format = excluded.format, mode = excluded.mode,
            secret = excluded.secret, enabled = excluded.enabled,
            disabled_reason = NULL, paused_until = NULL, updated_at = now()
        RETURNING {_COLUMNS}
        """,
        account_id,
        url,
        format,
        mode,
        secret,
        enabled,
    )
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("endpoint upsert returned nothing")
    return Endpoint(**dict(row))
