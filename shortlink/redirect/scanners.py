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
W workers (SO_REUSEPORT) is refused after at most W x the limit. Memory is bounded:
at most MAX_ADDRESSES addresses are counted per window; more, and the new ones go
uncounted until the window ends (a flood from that many addresses is a matter for
the network's own defences).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 100_000
MAX_ADDRESS_LENGTH = 64


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
        address = address[:MAX_ADDRESS_LENGTH]  # an IPv6 scope id can be any length
        counts = self._counts
        seen = counts.get(address)
        if seen is None:
            if len(counts) >= MAX_ADDRESSES:
                return None
            seen = 0
        counts[address] = seen + 1
        if seen < self.limit:
            return None
        self.refused += 1
        return max(1, math.ceil(self._ends_at - now))

    def __len__(self) -> int:
        return len(self._counts)
