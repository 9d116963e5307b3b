"""Stored text, target URLs and phone numbers as the API accepts them."""

from __future__ import annotations

import re

import pytest

from shortlink.exceptions import InvalidInput
from shortlink.validation import (
    ENDPOINT_URL_PATTERN,
    endpoint_url,
    phone_number,
    short_domain_address,
    short_domain_pattern,
    target_url,
    text,
)


def test_text_that_cannot_be_stored_is_refused() -> None:
    """NUL and bytes that were not UTF-8 (lone surrogates) are refused; other text is kept."""
    assert (
        text("Spring sale, 50 % off \u2013 \U0001f600") == "Spring sale, 50 % off \u2013 \U0001f600"
    )
    with pytest.raises(InvalidInput, match="NUL"):
        text("spring\x00")
    with pytest.raises(InvalidInput, match="UTF-8"):
        text(b"sl_\xff\xfe".decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("+44 7700 900123", "447700900123"),
        ("0044-7700-900123", "447700900123"),
        ("(+1) 408.555.0123", "14085550123"),
        ("919812345678", "919812345678"),
        ("+44\u00a07700/900123", "447700900123"),
        ("+44 (0)7700 900123", "447700900123"),
        ("0044 (0) 7700 900123", "447700900123"),
        ("+7 (8) 912 345-67-89", "79123456789"),
        ("+39 (0)6 1234 5678", "390612345678"),
        ("+1 (415) 555-0100", "14155550100"),
    ],
)
def test_phone_numbers_become_international_digits(raw: str, digits: str) -> None:
    """Separators, the international prefix and a bracketed trunk prefix (not Italy's) go."""
    assert phone_number(raw) == digits


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("07700 900123", "national"),
        ("+44 77", "7 to 15 digits"),
        ("+44 7700 900123 4567", "7 to 15 digits"),
        ("+999 1234567", "country calling code"),
        ("+44 7700 9001", "has 8 digits after the country calling code \\+44"),
        ("+44 (0)7700 9001", "has 8 digits after"),
        ("+44 7700 900123 1", "has 11 digits after the country calling code \\+44"),
        ("+44 (0)77009001234", "has 11 digits"),
        ("+1 415 555 01", "7 or 10 digits"),
        ("+91 98123 45", "8 to 13 digits"),
        ("+44 7700 9001x3", "may contain only"),
        ("+٤٤٧٧٠٠٩٠٠١٢٣", "may contain only"),
        ("\t+44 7700 900123", "may contain only"),
        ("+44 7700 900123\n", "may contain only"),
        ("44+7700900123", "may contain only"),
        (" + ", "is empty"),
    ],
)
def test_implausible_phone_numbers_are_refused(raw: str, reason: str) -> None:
    """National, a length impossible for its country code, unknown code, not digits: refused."""
    with pytest.raises(InvalidInput, match=reason):
        phone_number(raw)


def test_urls_are_normalised() -> None:
    """Non-ASCII hosts become punycode and paths are percent-encoded (Location is ASCII)."""
    assert target_url("https://bücher.example/straße?q=ä", "sl.test") == (
        "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4"
    )
    assert target_url("HTTPS://Shop.Example.COM:8443?x=1", "sl.test") == (
        "https://shop.example.com:8443/?x=1"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "https://xn--bcher-kva.example/",
        "http://[2001:db8::1]:8080/x",
        "http://127.0.0.1/",
        "https://a-b.example./p#top",
        "https://" + "a" * 63 + "." + "b-c" * 21 + ".example/",
    ],
)
def test_international_hosts_and_address_literals_are_accepted(raw: str) -> None:
    """Punycode names, IPv6 literals, IPv4 addresses and a final dot are targets too."""
    assert target_url(raw, "sl.test").startswith(raw[:8].lower())


@pytest.mark.parametrize(
    "raw",
    [
        "javascript:alert(1)",
        "data:text/html,x",
        "ftp://example.com/",
        "https://u:p@example.com/",
        "https:///path",
        "https://example.com/a b",
        "https://sl.test:8080/AbC1234",
        "//example.com/",
        "",
        "  https://example.com/a  ",
        "https://example.com:0/",
        "https://example.com:65536/",
        "https://example.com:/",
        "https://under_score.example/",
        "https://double--dash.example/",
        "https://xn--zz.example/",
        "https://example.com/" + "a" * 2029,
        "https://" + "a" * 64 + ".example/",
        "https://shop." + "b-" * 32 + "c.example/",
        "https://xn--" + "a" * 60 + "-kva.example/",
    ],
)
def test_unusable_urls_are_refused(raw: str) -> None:
    """Only http(s) with a host, without credentials or spaces, never our own domain."""
    with pytest.raises(InvalidInput):
        target_url(raw, "sl.test:8080")


@pytest.mark.parametrize(
    ("raw", "short_domain", "refused"),
    [
        ("https://sl.test/AbC1234", "sl.test", True),
        ("HTTP://SL.TEST:443/x", "sl.test", True),
        ("http://sl.test.", "sl.test", True),
        ("https://sl.test:8443/x", "sl.test", False),
        ("http://127.0.0.1:8080/AbC1234", "127.0.0.1:8080", True),
        ("http://127.0.0.1:8083/hook", "127.0.0.1:8080", False),
        ("http://127.0.0.1/", "127.0.0.1:8080", False),
        ("http://sl.test/", "sl.test:80", True),
        ("https://sl.test:80/", "sl.test:80", True),
        ("https://sl.test/", "sl.test:80", False),
        ("http://[::1]:8080/", "[::1]:8080", True),
        ("http://[::1]:8081/", "[::1]:8080", False),
    ],
)
def test_the_short_domain_is_a_host_and_a_port(raw: str, short_domain: str, refused: bool) -> None:
    """A target on SHORT_DOMAIN's host and port (80 and 443 when it names none) is refused,
    as its pattern says; another port of that host is a target like any other."""
    pattern = short_domain_pattern(short_domain)
    if pattern is not None:
        assert (re.search(pattern, raw) is not None) is refused
    if refused:
        with pytest.raises(InvalidInput, match="short domain itself"):
            target_url(raw, short_domain)
    else:
        assert target_url(raw, short_domain).startswith(raw[:7].lower())


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        ("HTTP://0", False),
        ("http://127.1/hook", False),
        ("http://2130706433/", False),
        ("http://01.2.3.4/", False),
        ("http://1.2.3.4./", False),
        ("http://256.0.0.1/", False),
        ("http://127.0.0.1:9/hook", True),
        ("http://0.0.0.0/", True),  # an address: refused as not public, unless allowed
        ("http://0x7f.1/", True),  # letters: a name, which the resolver checks
        ("http://1-2.3/", True),
        ("https://123.hooks.example./in", True),
    ],
)
def test_endpoint_urls_read_digits_and_dots_as_an_ipv4_address(raw: str, accepted: bool) -> None:
    """Where we connect, a host of digits and dots must be a plain IPv4 address."""
    assert (re.fullmatch(ENDPOINT_URL_PATTERN, raw) is not None) is accepted
    if accepted:
        endpoint_url(raw)
    else:
        with pytest.raises(InvalidInput):
            endpoint_url(raw)


@pytest.mark.parametrize(
    ("short_domain", "address"),
    [
        ("Tx1.IN", ("tx1.in", {80, 443})),
        ("tx1.in:8080", ("tx1.in", {8080})),
        ("[::1]:8443", ("::1", {8443})),
        ("tx1.in:\u00b2", ("tx1.in", {80, 443})),  # "²".isdigit(), but no port
    ],
)
def test_the_short_domain_address_is_its_host_and_ports(
    short_domain: str, address: tuple[str, set[int]]
) -> None:
    """The host in lower case and the port named, else 80 and 443; never a crash."""
    assert short_domain_address(short_domain) == address
