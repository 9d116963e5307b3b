"""The clicker's IP address: the socket peer, or X-Forwarded-For behind trusted proxies.

X-Forwarded-For is believed only when the peer is a configured proxy
(TRUSTED_PROXIES). The list is then read from the right, skipping further
trusted proxies; the first address that is not one is the client. Anything a
client wrote to the left of that is ignored, so a client cannot forge its IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Protocol

from shortlink.config import IPNetwork


def resolver(
    trusted: tuple[IPNetwork, ...],
) -> Callable[[str | None, str | None], str | None]:
    """A function (peer, x_forwarded_for) -> client IP, for the given trusted proxies."""
    if not trusted:
        return _peer_only

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    def resolve(peer: str | None, forwarded_for: str | None) -> str | None:
        if peer is None or not forwarded_for or not is_trusted(peer):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            address = _strip_port(hop.strip())
            if not address:
                continue
            if not is_trusted(address):
                try:
                    return str(ipaddress.ip_address(address))
                except ValueError:
                    return peer  # garbage in the header: fall back to what we know
        return peer

    return resolve


def _peer_only(peer: str | None, forwarded_for: str | None) -> str | None:
    return peer


def _strip_port(hop: str) -> str:
    """'[2001:db8::1]:443' -> '2001:db8::1', '203.0.113.9:80' -> '203.0.113.9'."""
    if hop.startswith("["):
        return hop[1 : hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


class Headers(Protocol):
    """What forwarded_for reads of a request's headers (aiohttp's CIMultiDictProxy)."""

    def getall(self, key: str, default: Sequence[str], /) -> Sequence[str]: ...


def forwarded_for(headers: Headers) -> str | None:
    """Every X-Forwarded-For line, joined in order: a proxy that adds a line of its own
    instead of appending to the client's must not leave the client's line to be read as
    the whole header."""
    values = headers.getall("X-Forwarded-For", ())
    if not values:
        return None
    return values[0] if len(values) == 1 else ",".join(values)
