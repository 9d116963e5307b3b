"""Scanners slowed: an address asking for many unknown tokens gets 429, real links still
redirect at once."""

from __future__ import annotations

import aiohttp
import asyncpg

from shortlink.redirect import scanners
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.scanners import ScanGuard
from tests.infra import running
from tests.shortlink.redirect.test_app import TARGET, make_link


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_past_the_limit_waits_for_the_window_to_end() -> None:
    """The limit's worth of unknown tokens pass; the next are refused with the seconds left
    in the window; a new window starts the count again; other addresses count apart."""
    clock = Clock()
    guard = ScanGuard(3, clock=clock)
    assert [guard.unknown("198.51.100.7") for _ in range(3)] == [None, None, None]
    clock.now += 20
    assert guard.unknown("198.51.100.7") == 40
    assert guard.unknown("203.0.113.9") is None
    assert guard.refused == 1
    clock.now += 40
    assert guard.unknown("198.51.100.7") is None
    assert len(guard) == 1


def test_a_long_address_is_counted_by_its_first_characters() -> None:
    """A scoped IPv6 address can be any length: the guard keeps at most 64 characters of
    it, so memory stays bounded whatever X-Forwarded-For a trusted proxy passes on."""
    guard = ScanGuard(1)
    guard.unknown("fe80::1%" + "a" * 10_000)
    assert guard.unknown("fe80::1%" + "a" * 9_000) is not None
    assert all(len(address) <= scanners.MAX_ADDRESS_LENGTH for address in guard._counts)


def test_a_limit_of_zero_counts_nothing() -> None:
    """SCAN_LIMIT_PER_MINUTE=0 turns the guard off."""
    guard = ScanGuard(0)
    assert all(guard.unknown("198.51.100.7") is None for _ in range(1000))
    assert len(guard) == 0


def test_memory_is_bounded_by_the_addresses_counted() -> None:
    """Past MAX_ADDRESSES in a window, new addresses share one count: a flood from many
    addresses is refused together, memory stays bounded, the counted ones keep theirs."""
    guard = ScanGuard(2)
    for index in range(scanners.MAX_ADDRESSES):
        guard.unknown(str(index))
    assert len(guard) == scanners.MAX_ADDRESSES
    assert guard.unknown("new-1") is None
    assert guard.unknown("new-2") is None
    assert guard.unknown("new-3") is not None  # the third newcomer: the shared count is spent
    assert len(guard) == scanners.MAX_ADDRESSES + 1
    assert guard.unknown("0") is None  # a counted address: its own second unknown token


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    """Addresses rotated inside one /64 are one client; another /64 is another; an
    IPv4-mapped address is its IPv4 address."""
    guard = ScanGuard(3)
    answers = [guard.unknown(f"2001:db8:1:2::{index:x}") for index in range(5)]
    assert answers[:3] == [None, None, None]
    assert all(answer is not None for answer in answers[3:])
    assert guard.unknown("2001:db8:1:3::1") is None
    assert scanners.client_of("::ffff:198.51.100.7") == "198.51.100.7"
    assert scanners.client_of("2001:db8:1:2:aaaa::1%eth0") == "2001:db8:1:2::/64"
    assert scanners.client_of("not an address") == "not an address"


async def test_a_scanner_gets_429_while_its_real_taps_redirect(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """With a limit of 3, the 4th unknown token from one address is a 429 with Retry-After;
    a real link from that address still answers 302, read from the database (warming is
    off: the cold path) and then from the cache."""
    config = RedirectConfig.from_env(
        {**redirect_env, "SCAN_LIMIT_PER_MINUTE": "3", "WARM_ON_CREATE": "false"}
    )
    token = await make_link(db, account_id)
    async with running(create_app(config), make_handler) as server, aiohttp.ClientSession() as s:

        async def status(path: str) -> tuple[int, dict[str, str]]:
            async with s.get(server.url + path, allow_redirects=False) as response:
                await response.read()
                return response.status, dict(response.headers)

        unknown = [await status(f"/Zz{index}Yy9") for index in range(3)]
        assert [code for code, _ in unknown] == [404, 404, 404]
        code, headers = await status("/Zz9Yy9q")
        assert code == 429
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert headers["Cache-Control"] == "no-store"
        for _ in range(2):  # a lookup, then a cache hit
            code, headers = await status(f"/{token}")
            assert code == 302
            assert headers["Location"] == TARGET
        code, _ = await status("/Zz8Yy9q")
        assert code == 429
