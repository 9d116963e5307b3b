"""Endpoint settings: URLs read as the HTTP client reads them, and which addresses are public."""

from __future__ import annotations

import ipaddress

import asyncpg
import pytest

from shortlink.endpoints import (
    EndpointError,
    PrivateAddressError,
    Resolver,
    check_host,
    is_public,
    literal_address,
    parse_url,
    set_endpoint,
)
from tests.infra import SilentResolver


@pytest.mark.parametrize(
    ("address", "public"),
    [
        # IPv4
        ("8.8.8.8", True),
        ("203.0.113.7", False),  # documentation
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),  # noqa: S104 - an address to judge, not one to bind
        ("224.0.0.1", False),  # multicast
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),
        # IPv6
        ("2606:4700:4700::1111", True),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("ff0e::1", False),  # global-scope multicast
        ("2001:db8::1", False),  # documentation
        ("100::1", False),  # discard
        # IPv4-mapped: judged by the IPv4 address
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        # IPv4-compatible (deprecated) and IPv4-translated: refused
        ("::127.0.0.1", False),
        ("::8.8.8.8", False),
        ("::ffff:0:7f00:1", False),
        ("::ffff:0:808:808", False),
        # NAT64 well-known prefix: judged by the IPv4 address
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b::8.8.8.8", True),
        # local-use NAT64: refused
        ("64:ff9b:1::a00:1", False),
        ("64:ff9b:1::808:808", False),
        # 6to4: judged by the IPv4 address
        ("2002:7f00:1::1", False),
        ("2002:a00:1::1", False),
        ("2002:c0a8:101::1", False),
        ("2002:808:808::1", True),
        # Teredo: refused
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
        ("2001:0:808:808::1", False),
        # not addresses
        ("localhost", False),
        ("", False),
        ("1.2.3", False),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    """Only globally routable addresses are public, an embedded IPv4 address included."""
    assert is_public(address) is public
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return
    assert is_public(parsed) is public  # as a parsed address too


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://hooks.example.com/clicks", "hooks.example.com"),
        ("https://HOOKS.Example.COM/clicks", "hooks.example.com"),
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook", "127.0.0.1"),  # full-width digits
        ("http://127\u30020\u30020\u30021/hook", "127.0.0.1"),  # ideographic full stops
        ("http://\uff11\uff10\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "10.0.0.1"),
        ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "localhost"),
        ("https://b\u00fccher.example/x", "xn--bcher-kva.example"),
        ("http://[::ffff:127.0.0.1]:8080/", "::ffff:7f00:1"),
        ("http://[64:ff9b::8.8.8.8]/", "64:ff9b::808:808"),
    ],
)
def test_urls_are_read_as_the_client_reads_them(url: str, host: str) -> None:
    """The host checked is the one aiohttp connects to (yarl's normalised raw host)."""
    assert parse_url(url).raw_host == host


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/", "must start with"),
        ("https:///clicks", "has no host"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https://hooks.example.com:0/", "port 0"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("https://hooks example.com/", "not a valid host name"),
        ("http://2130706433/", "not a valid IP address"),  # 127.0.0.1 to the system
        ("http://127.1/", "not a valid IP address"),
        ("http://0177.0.0.1/", "not a valid IP address"),
        ("http://127.0.0.1./", "not a valid IP address"),
        ("http://\uff11\uff12\uff17.\uff11/", "not a valid IP address"),
        ("https://" + "a" * 2050 + ".example/", "longer than"),
        ("https://" + "a" * 64 + ".example/", "label longer than 63 characters"),
        ("https://hooks." + "b" * 70 + "/", "label longer than 63 characters"),
        ("https://hooks..example/", "not a valid host name"),
        ("https://b\u00fc" + "c" * 62 + ".example/", "not a valid URL"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    """A URL the client would read differently from a plain http(s) URL is refused."""
    with pytest.raises(EndpointError, match=message) as refused:
        parse_url(url)
    assert refused.value.field == "url"


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("hooks.example.com", None),
        ("0x7f.1", None),  # has letters: goes to the resolver, which checks what it finds
        ("xn--bcher-kva.example", None),
    ],
)
def test_literal_addresses(host: str, address: str | None) -> None:
    """A host that is an IP address is recognised as one; a name is left to the resolver."""
    found = literal_address(host)
    assert (None if found is None else str(found)) == address


@pytest.mark.parametrize(
    "url",
    [
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",
        "http://127\u30020\u30020\u30021/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "http://[2002:7f00:1::1]/hook",
        "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/hook",
    ],
)
async def test_disguised_private_hosts_are_refused_when_set(
    db: asyncpg.Connection, account_id: int, url: str
) -> None:
    """Setting an endpoint whose host is a private address in disguise is refused."""
    with pytest.raises(PrivateAddressError, match="non-public address"):
        await set_endpoint(
            db,
            account_id,
            url=url,
            format="json",
            mode="every",
            secret=None,
            enabled=True,
            allow_private=False,
        )
    assert (
        await db.fetchval("SELECT count(*) FROM endpoints WHERE account_id = $1", account_id) == 0
    )


async def test_numeric_hosts_are_refused_even_when_private_ones_are_allowed(
    db: asyncpg.Connection, account_id: int
) -> None:
    """`http://2130706433/` is refused whatever ALLOW_PRIVATE_ENDPOINTS says: it is ambiguous."""
    with pytest.raises(EndpointError, match="not a valid IP address"):
        await set_endpoint(
            db,
            account_id,
            url="http://2130706433/hook",
            format="json",
            mode="every",
            secret=None,
            enabled=True,
            allow_private=True,
        )


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "hooks..example", ".example"])
async def test_a_host_the_resolver_cannot_encode_is_an_endpoint_error(host: str) -> None:
    """A host the resolver's IDNA codec refuses is an EndpointError, not a UnicodeError."""
    with pytest.raises(EndpointError, match="not a valid host name") as refused:
        await check_host(host, 443, allow_private=True)
    assert refused.value.field == "url"


async def test_a_resolver_that_never_answers_is_a_refusal_at_the_timeout() -> None:
    """A lookup that never answers ends after the timeout, as a refusal saying so."""
    silent = SilentResolver()
    with pytest.raises(EndpointError, match=r"did not resolve within 0\.2 s") as refused:
        await check_host("hooks.example", 443, allow_private=True, resolver=silent, within=0.2)
    assert refused.value.field == "url"
    assert silent.asked == ["hooks.example"]


async def test_a_host_without_addresses_is_refused() -> None:
    """A resolver answering no address at all is a refusal, not an empty check that passes."""

    class Empty(Resolver):
        async def resolve(self, host: str, port: int) -> list[str]:
            return []

    with pytest.raises(EndpointError, match="has no address"):
        await check_host("hooks.example", 443, allow_private=True, resolver=Empty())
