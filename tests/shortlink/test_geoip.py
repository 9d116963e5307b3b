"""Client IP -> country and region: the packaged RIR data, and the operator's .mmdb file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortlink.geoip import NOWHERE, PACKAGED, Locator, Place, _from_record
from tests.forwarder.conftest import write_city_database


@pytest.fixture
def city_database(tmp_path: Path) -> Path:
    """GEOIP_DATABASE for a test: a small real .mmdb built for it."""
    return write_city_database(tmp_path / "city.mmdb")


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("145.97.39.155", "NL"),  # SURF, the Dutch universities' network
        ("8.8.8.8", "US"),
        ("81.2.69.142", "GB"),
        ("2001:67c:2e8::1", "NL"),  # RIPE NCC
        ("::ffff:145.97.39.155", "NL"),  # IPv4 in an IPv6 socket
    ],
)
def test_packaged_data_gives_the_country_and_no_region(address: str, country: str) -> None:
    """Without GEOIP_DATABASE the RIR data shipped in the wheel gives the country only."""
    assert PACKAGED.locate(address) == Place(country, None)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.1.10",
        "172.16.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.1.1",
        "fe80::1",
        "fd00::1",
        "203.0.113.7",  # documentation
        "not an address",
        "",
        None,
    ],
)
def test_private_loopback_and_bad_addresses_have_no_place(address: str | None) -> None:
    """Addresses that are not on the public Internet, and text that is no address, give null."""
    assert PACKAGED.locate(address) == NOWHERE
    assert Locator().locate(address) == NOWHERE


def test_the_operators_database_gives_country_and_region(city_database: Path) -> None:
    """A GeoLite2-City style file wins: its country and its first subdivision's English name."""
    locator = Locator(city_database)
    try:
        assert locator.locate("145.97.39.155") == Place("NL", "North Holland")
        assert locator.locate("81.2.69.142") == Place("GB", "England")
        assert locator.locate("2a02:a440::1") == Place("NL", "Utrecht")
        assert locator.locate("::ffff:81.2.69.142") == Place("GB", "England")
    finally:
        locator.close()


def test_what_the_file_does_not_place_comes_from_the_packaged_data(city_database: Path) -> None:
    """Registered country only, an unreadable record, or no record: the country still comes."""
    locator = Locator(city_database)
    try:
        assert locator.locate("8.8.8.8") == Place("US", None)  # registered_country
        assert locator.locate("1.1.1.1") == Place("AU", None)  # {"country": 42}: packaged data
        assert locator.locate("9.9.9.9") == Place("US", None)  # not in the file
        assert locator.locate("10.0.0.1") == NOWHERE
    finally:
        locator.close()


def test_lookups_are_cached_per_distinct_address() -> None:
    """Repeated addresses are answered from the LRU cache."""
    locator = Locator()
    for _ in range(5):
        locator.locate("145.97.39.155")
    info = locator.cache_info()
    assert (info.misses, info.hits) == (1, 4)


@pytest.mark.parametrize(
    "record",
    [
        {"country": {"iso_code": "A1"}},  # MaxMind legacy: anonymous proxy
        {"country": {"iso_code": "O1"}},  # MaxMind legacy: other
        {"country": "--"},  # IP2Location: no country
        {"country": "1A"},
        {"country": {"iso_code": "A2"}, "registered_country": {"iso_code": "99"}},
    ],
)
def test_codes_that_are_no_country_give_none(record: dict[str, object]) -> None:
    """Two-character codes that are not two letters are no country: clicks.country's CHECK
    (^[A-Z]{2}$) would refuse them and the click would end in dead_events."""
    assert _from_record(record) == NOWHERE


def test_a_code_that_is_no_country_falls_back_to_the_registered_one() -> None:
    """A satellite block marked "A2" with a registered country gives the registered one."""
    record = {"country": {"iso_code": "A2"}, "registered_country": {"iso_code": "lu"}}
    assert _from_record(record) == Place("LU", None)


def test_a_legacy_code_in_the_file_gives_the_packaged_country(tmp_path: Path) -> None:
    """An address the file marks "A1" gets its country from the packaged data instead."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    writer.insert_network(IPSet(["145.97.0.0/16"]), {"country": {"iso_code": "A1"}})
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": "--", "region": "x"})
    writer.to_db_file(str(tmp_path / "legacy.mmdb"))
    locator = Locator(tmp_path / "legacy.mmdb")
    try:
        assert locator.locate("145.97.39.155") == Place("NL", None)
        assert locator.locate("81.2.69.142") == Place("GB", None)
    finally:
        locator.close()
