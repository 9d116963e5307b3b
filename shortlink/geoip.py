"""Client IP -> country (ISO 3166-1 alpha-2) and region (subdivision name), offline.

Two sources, both read on this machine, never over the network:
- the operator's database, a MaxMind DB file named by GEOIP_DATABASE (GeoLite2 or
  GeoIP2 City/Country, DB-IP City/Country Lite, or any .mmdb whose records carry
  `country.iso_code` and `subdivisions[0].names.en`, or flat `country` / `region`
  strings as ipinfo's files do), read with maxminddb (memory-mapped, C extension);
- otherwise, and for the addresses that file has no country for, the country the
  Regional Internet Registries delegated the address block to, as shipped in the
  `iptocc` wheel (refreshed from the five RIRs' delegation files with each
  release). It has no regions: region is null.

Private, loopback, link-local, documentation and other non-global addresses have no
place: both are null. A campaign's clicks come from many addresses, but taps of one
person, replays and previews repeat them, so results are kept in an LRU cache per
distinct address, like the user-agent cache of forwarder.enrich. A lookup never
raises: an address that cannot be read, or a database record of another shape,
gives null.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iptocc
import maxminddb

log = logging.getLogger(__name__)

CACHE_SIZE = 65_536
MAX_REGION = 128  # characters of a region name as stored (a file may hold anything)
# What clicks.country accepts (its CHECK), once upper-cased. Files also carry codes
# such as MaxMind's legacy "A1" (anonymous proxy), "A2", "O1" or IP2Location's "--":
# no country, and a row PostgreSQL would refuse (the click would go to dead_events).
_COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a click came from, as far as the data says."""

    country: str | None  # ISO 3166-1 alpha-2, upper case
    region: str | None  # subdivision name (English), where the data has it


NOWHERE = Place(None, None)


class Locator:
    """Looks addresses up in the operator's .mmdb, if any, then in the packaged data."""

    def __init__(self, database: Path | None = None) -> None:
        # Opened at once: a file that is not a MaxMind DB stops the forwarder at
        # start (maxminddb.InvalidDatabaseError), not at the first click.
        self._reader: maxminddb.Reader | None = (
            maxminddb.open_database(str(database), maxminddb.MODE_AUTO) if database else None
        )
        self.database = database
        self.locate = functools.lru_cache(maxsize=CACHE_SIZE)(self._locate)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def cache_info(self) -> functools._CacheInfo:
        """Hits and misses of the address cache (for metrics)."""
        return self.locate.cache_info()

    def _locate(self, address: str | None) -> Place:
        if not address:
            return NOWHERE
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # not an address (the redirect server sends only addresses)
            return NOWHERE
        try:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if not ip.is_global:
                return NOWHERE
            text = str(ip)
            place = _from_record(self._reader.get(text)) if self._reader else NOWHERE
            if place.country is None:
                country = _country_code(iptocc.country_code(text))
                place = Place(country, None) if country else NOWHERE
            return place
        except Exception:  # a lookup must never stop the recorder
            log.warning("IP lookup failed", extra={"address": address[:64]}, exc_info=True)
            return NOWHERE


def _from_record(record: Any) -> Place:
    """country and region of a MaxMind DB record of the City / Country formats."""
    if not isinstance(record, dict):
        return NOWHERE
    country = record.get("country")
    if isinstance(country, dict):
        country = country.get("iso_code")
    country = _country_code(country)
    if country is None:
        # Anycast and satellite blocks may carry only the registered country.
        registered = record.get("registered_country")
        country = _country_code(
            registered.get("iso_code") if isinstance(registered, dict) else None
        )
    if country is None:
        return NOWHERE
    region = record.get("region")
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], dict):
        names = subdivisions[0].get("names")
        region = names.get("en") if isinstance(names, dict) else None
    return Place(country, region[:MAX_REGION] if isinstance(region, str) and region else None)


def _country_code(value: Any) -> str | None:
    """`value` upper-cased if it is two ASCII letters (ISO 3166-1 alpha-2's shape), else None."""
    return value.upper() if isinstance(value, str) and _COUNTRY_CODE.fullmatch(value) else None


PACKAGED = Locator()
"""The packaged country data alone (no GEOIP_DATABASE)."""
