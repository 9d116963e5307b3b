"""Client IP resolution behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from shortlink.clientip import forwarded_for, resolver

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    """With no proxies configured, X-Forwarded-For is ignored."""
    assert resolver(())("203.0.113.5", "198.51.100.1") == "203.0.113.5"


def test_forwarded_for_from_a_trusted_proxy() -> None:
    """Behind a trusted proxy, the right-most untrusted hop is the client."""
    resolve = resolver(PROXIES)
    assert resolve("10.1.2.3", "198.51.100.1") == "198.51.100.1"
    assert resolve("10.1.2.3", "1.2.3.4, 198.51.100.1, 10.9.9.9") == "198.51.100.1"
    assert resolve("10.1.2.3", "[2001:db9::1]:443") == "2001:db9::1"
    assert resolve("10.1.2.3", "198.51.100.1:5000") == "198.51.100.1"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    """A client cannot set its own IP by sending the header directly."""
    assert resolver(PROXIES)("203.0.113.5", "1.1.1.1") == "203.0.113.5"


def test_garbage_or_all_trusted_hops_fall_back_to_the_peer() -> None:
    """An unparsable hop or a chain of only proxies gives the peer address."""
    resolve = resolver(PROXIES)
    assert resolve("10.1.2.3", "not-an-ip") == "10.1.2.3"
    assert resolve("10.1.2.3", "10.0.0.9, 10.0.0.8") == "10.1.2.3"
    assert resolve("10.1.2.3", "") == "10.1.2.3"


def test_every_forwarded_for_line_is_read() -> None:
    """A proxy that adds its own X-Forwarded-For line after the client's cannot be fooled by
    the client's line: the lines are read joined, right-most untrusted hop first."""
    joined = forwarded_for(Lines(["1.1.1.1", "198.51.100.9"]))
    assert joined == "1.1.1.1,198.51.100.9"
    assert resolver(PROXIES)("10.1.2.3", joined) == "198.51.100.9"
    assert forwarded_for(Lines([])) is None


class Lines:
    """Request headers holding these X-Forwarded-For lines (as aiohttp's getall gives them)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def getall(self, key: str, default: Sequence[str], /) -> Sequence[str]:
        return self.lines if key == "X-Forwarded-For" and self.lines else default
