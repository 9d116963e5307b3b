"""Slowing token scanners: a client address that asks for many unknown tokens gets 429.

Tokens are unguessable, so an address asking for many tokens that do not exist is
guessing. Each redirect worker counts, per client address (the one the clicks
record: the peer, or X-Forwarded-For's behind TRUSTED_PROXIES), the unknown tokens
it answered in the current fixed one-minute window; past SCAN_LIMIT_PER_MINUTE (120
by default; 0 turns this off), the address's unknown tokens are answered 429 with
Retry-After (the seconds left in the window) instead of 404, until the window ends.

Only the unknown-token path counts and checks: a token found in the cache, or by
the lookup, is redirected at once whoever asks, so a throttled address's taps on
real links are never slowed, and a cache hit does no more work than before. The
count is per worker process: a scanner whose connections the kernel spreads over
W workers (SO_REUSEPORT) is refused after at most W x the limit.

An IPv6 client is counted by its /64, the smallest network one subscriber gets (a
scanner rotating addresses inside its own /64 is one client). Memory is bounded: at
most MAX_ADDRESSES clients are counted per window; past that, every new client of the
window shares one count (OVERFLOW), so a flood from many addresses is refused
together instead of going uncounted, while the clients counted before keep their own.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 100_000
MAX_ADDRESS_LENGTH = 64
OVERFLOW = "(overflow)"  # the one count of the clients past MAX_ADDRESSES


def client_of(address: str) -> str:
    """What is counted for `address`: an IPv4 address as it is, an IPv6 one as its /64
    (its first four groups, the zone id dropped); anything else, its first characters."""
    address = address[:MAX_ADDRESS_LENGTH]  # an IPv6 scope id can be any length
    if ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((parsed, 64), strict=False))


class ScanGuard:
    """Unknown tokens per client address in the current window."""

    __slots__ = ("_clock", "_counts", "_ends_at", "limit", "refused")

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # unknown tokens an address may ask for per window; 0: no limit
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._ends_at = 0.0
        self.refused = 0  # unknown tokens answered 429 (a metric)

    def unknown(self, address: str) -> int | None:
        """Count an unknown token asked for by `address`: None to answer 404 as usual, or
        the seconds the address should wait (answer 429)."""
        if not self.limit:
            return None
        now = self._clock()
        if now >= self._ends_at:
            self._counts.clear()
            self._ends_at = now + WINDOW_SECONDS
        address = client_of(address)
        counts = self._counts
        seen = counts.get(address)
        if seen is None:
            if len(counts) >= MAX_ADDRESSES:
                address = OVERFLOW
                seen = counts.get(address, 0)
            else:
                seen = 0
        counts[address] = seen + 1
        if seen < self.limit:
            return None
        self.refused += 1
        return max(1, math.ceil(self._ends_at - now))

    def __len__(self) -> int:
        return len(self._counts)
