"""Customer endpoints: where an account's clicks are forwarded, and what is allowed there.

Shared by the API / CLI (which set them) and the forwarder (which posts to them).
An endpoint URL must be http(s) with a host and no credentials; it must not
resolve to a loopback, private, link-local, multicast or otherwise non-public
address unless ALLOW_PRIVATE_ENDPOINTS is on. The forwarder checks the addresses
again at every connection, so a DNS change cannot point it inward later.

Every check looks at the host as the HTTP client will connect to it: parsed by
yarl, as aiohttp does, which folds full-width digits and ideographic full stops
(U+FF11 is the digit 1, U+3002 a dot: such a host can be 127.0.0.1) and
encodes international names to punycode.
aiohttp connects to a host that looks numeric without asking the resolver, and
the system reads `2130706433`, `127.1` or `0177.0.0.1` as addresses, so a host
made of digits and dots (or holding a colon) must be a plain IP address.
IPv6 addresses that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged
by that IPv4 address; the transition ranges that only reach inward or are
obsolete (IPv4-compatible `::a.b.c.d`, IPv4-translated, local-use NAT64, Teredo)
are refused outright.

Setting an endpoint or a callback resolves its host once, through a Resolver
(the system's getaddrinfo; the API keeps one under an app key, so tests can put a
deterministic one there), and gives up after ENDPOINT_DNS_TIMEOUT_SECONDS (5 by
default): a refusal saying the host did not resolve in time, not a request that
hangs as long as the system resolver does.

A callback URL named by a links or messages request (seed 001's lt_callbackurl)
is an endpoints row of its own, owned through `callback_account_id` (its
`account_id` is NULL, so nothing that reads an account's endpoint takes it):
`callback_endpoint()` checks the URL by the same rules and finds or makes it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from yarl import URL

from shortlink import validation
from shortlink.db import Executor
from shortlink.exceptions import EndpointError, PrivateAddressError
from shortlink.timestamps import rfc3339

FORMATS = ("json", "xml", "clickthru")
MODES = ("every", "first")
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A host name once yarl has encoded it (punycode): letters, digits, '-', '_', '.'.
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# IPv6 ranges that embed an IPv4 address we cannot or need not judge: refused.
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "::/96",  # IPv4-compatible ::a.b.c.d (deprecated by RFC 4291), with :: and ::1
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to private networks
        "2001::/32",  # Teredo (RFC 4380): tunnels to an obfuscated IPv4 address
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix (RFC 6052)
DNS_TIMEOUT = 5.0  # seconds a host check waits for the resolver (ENDPOINT_DNS_TIMEOUT_SECONDS)


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
    conversions: bool

    def public(self) -> dict[str, object]:
        """What the API shows: everything but the secret itself."""
        return {
            "url": self.url,
            "format": self.format,
            "mode": self.mode,
            "secret_set": self.secret is not None,
            "enabled": self.enabled,
            "conversions": self.conversions,
            "disabled_reason": self.disabled_reason,
            "updated_at": rfc3339(self.updated_at),
        }


def parse_url(url: str) -> URL:
    """The URL as the HTTP client reads it, if it is an absolute http(s) URL with a
    host and no credentials (EndpointError otherwise)."""
    if len(url) > MAX_URL_LENGTH:
        raise EndpointError("url", f"longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError, UnicodeError) as exc:
        raise EndpointError("url", f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise EndpointError("url", "must start with https:// or http://")
    if not parsed.raw_host:
        raise EndpointError("url", "has no host")
    if parsed.user is not None or parsed.password is not None:
        raise EndpointError("url", "must not contain credentials")
    if port == 0:
        raise EndpointError("url", "port 0 is not allowed")
    if literal_address(parsed.raw_host) is None:
        labels = parsed.raw_host.removesuffix(".").split(".")
        if not _HOST_NAME.fullmatch(parsed.raw_host) or "" in labels:
            raise EndpointError("url", f"host {parsed.raw_host!r} is not a valid host name")
        if (label := validation.long_label(parsed.raw_host)) is not None:
            raise EndpointError(
                "url", f"host name label longer than {validation.MAX_LABEL} characters ({label})"
            )
    return parsed


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` (yarl's raw_host) names literally; None for a name.

    EndpointError for a host that looks numeric but is not a plain address
    (`2130706433`, `127.1`, `127.0.0.1.`): aiohttp would connect to it without
    asking the resolver, and the system would read it as some address. (A host with
    letters, such as `0x7f.1`, goes through the resolver, which checks what it finds.)
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # aiohttp.helpers.is_ip_address: what the client connects to unresolved.
    if ":" in host or host.replace(".", "").isdigit():
        raise EndpointError("url", f"host {host!r} is not a valid IP address")
    return None


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


def is_public(address: str | IPAddress) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local,
    multicast, ...), judging an IPv6 address that embeds an IPv4 one by the latter."""
    if isinstance(address, str):
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
    else:
        ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # without its zone, which changes nothing here
        if any(ip in network for network in _REFUSED_V6):
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.is_global and not ip.is_multicast


class Resolver:
    """Looks up the addresses of a host: the system's resolver (getaddrinfo, as the
    forwarder's HTTP client connects). OSError when the host has none."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})


SYSTEM_RESOLVER = Resolver()


async def check_host(
    host: str,
    port: int,
    *,
    allow_private: bool,
    resolver: Resolver = SYSTEM_RESOLVER,
    within: float = DNS_TIMEOUT,
) -> list[str]:
    """Resolve `host` within `within` seconds (EndpointError if it does not);
    PrivateAddressError if any address is not public (unless allowed)."""
    try:
        async with asyncio.timeout(within):
            addresses = await resolver.resolve(host, port)
    except TimeoutError:  # before OSError, of which it is one
        raise EndpointError(
            "url",
            f"host {host!r} did not resolve within {within:g} s "
            "(ENDPOINT_DNS_TIMEOUT_SECONDS); try again later",
        ) from None
    except OSError as exc:
        raise EndpointError("url", f"host {host!r} does not resolve ({exc})") from None
    except UnicodeError as exc:  # the resolver's IDNA codec: an empty or too long label
        raise EndpointError("url", f"host {host!r} is not a valid host name ({exc})") from None
    if not addresses:
        raise EndpointError("url", f"host {host!r} has no address")
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise PrivateAddressError(
                "url",
                f"host {host!r} resolves to non-public address {refused[0]}; "
                "set ALLOW_PRIVATE_ENDPOINTS=true to allow it",
            )
    return addresses


_COLUMNS = (
    "id, account_id, url, format, mode, secret, enabled, disabled_reason, created_at, updated_at,"
    " conversions"
)


async def get_endpoint(conn: asyncpg.Connection | asyncpg.Pool, account_id: int) -> Endpoint | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM endpoints WHERE account_id = $1", account_id)
    return None if row is None else Endpoint(**dict(row))


async def set_endpoint(
    conn: Executor,
    account_id: int,
    *,
    url: str,
    format: str,
    mode: str,
    secret: str | None,
    enabled: bool,
    allow_private: bool,
    conversions: bool = False,
    resolver: Resolver = SYSTEM_RESOLVER,
    dns_timeout: float = DNS_TIMEOUT,
) -> Endpoint:
    """Create or replace the account's endpoint after validating every field."""
    parsed = parse_url(url)
    if format not in FORMATS:
        raise EndpointError("format", f"must be one of {', '.join(FORMATS)}")
    if mode not in MODES:
        raise EndpointError("mode", f"must be one of {', '.join(MODES)}")
    if secret is not None:
        secret_key(secret)
    await check_host(
        parsed.raw_host or "",
        parsed.port or 0,
        allow_private=allow_private,
        resolver=resolver,
        within=dns_timeout,
    )
    row = await conn.fetchrow(
        f"""
        INSERT INTO endpoints (account_id, url, format, mode, secret, enabled, conversions)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (account_id) DO UPDATE SET
            url = excluded.url, format = excluded.format, mode = excluded.mode,
            secret = excluded.secret, enabled = excluded.enabled,
            conversions = excluded.conversions,
            disabled_reason = NULL, paused_until = NULL, updated_at = now()
        RETURNING {_COLUMNS}
        """,
        account_id,
        url,
        format,
        mode,
        secret,
        enabled,
        conversions,
    )
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
        raise RuntimeError("endpoint upsert returned nothing")
    return Endpoint(**dict(row))


async def callback_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool,
    account_id: int,
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver = SYSTEM_RESOLVER,
    dns_timeout: float = DNS_TIMEOUT,
) -> int:
    """The id of the account's callback destination for `url`, made if new and enabled
    again if it was disabled (the account names it anew); EndpointError for a URL the
    account's endpoint could not have (field `callback_url`).

    Its own short statement, outside the caller's transaction: a request creating
    200,000 links must not hold the row (which the forwarder's leases update) locked.
    """
    try:
        parsed = parse_url(url)
        await check_host(
            parsed.raw_host or "",
            parsed.port or 0,
            allow_private=allow_private,
            resolver=resolver,
            within=dns_timeout,
        )
    except EndpointError as exc:
        raise type(exc)("callback_url", exc.message) from None
    endpoint_id: int = await conn.fetchval(
        """
        INSERT INTO endpoints (callback_account_id, url, format, mode)
        VALUES ($1, $2, 'clickthru', 'first')
        ON CONFLICT (callback_account_id, md5(url)) WHERE callback_account_id IS NOT NULL
        DO UPDATE SET enabled = true, disabled_reason = NULL, used_at = now(),
            updated_at = CASE WHEN endpoints.enabled THEN endpoints.updated_at ELSE now() END
        RETURNING id
        """,
        account_id,
        url,
    )
    return endpoint_id
