"""How much of a client address each account keeps (accounts.ip_storage, issue 23).

`full` keeps the address as the redirect server saw it; `truncated` keeps its
network only, IPv4 /24 and IPv6 /48 (`203.0.113.77` -> `203.0.113.0`); `none`
keeps nothing. The mode is applied by the recorder to each event before anything
is written or delivered (clicks, outbox, deliveries), after shortlink.geoip has
placed the full address: country and region are still known.

The recorder reads the modes of the accounts that do not keep the full address
(usually few) at most every REFRESH_SECONDS, one query, from the batch's
connection: a change of mode applies to the clicks recorded from at most that
long after it (docs/forwarder.md). An account not in the map keeps `full`.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence

from shortlink.clickevent import ClickEvent
from shortlink.db import Executor

REFRESH_SECONDS = 5.0


def truncated(address: str | None) -> str | None:
    """The network of `address`: IPv4 /24, IPv6 /48 (None for what is not an address)."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


class IpModes:
    """The accounts' ip_storage modes other than `full`, read again when stale."""

    def __init__(
        self, refresh: float = REFRESH_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.modes: dict[int, str] = {}
        self._refresh = refresh
        self._clock = clock
        self._read_at: float | None = None

    async def fresh(self, conn: Executor) -> dict[int, str]:
        """The modes, read again first if they were read more than `refresh` ago."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._refresh:
            rows = await conn.fetch(
                "SELECT id, ip_storage FROM accounts WHERE ip_storage <> 'full'"
            )
            self.modes = {row["id"]: row["ip_storage"] for row in rows}
            self._read_at = now
        return self.modes


def applied(events: Sequence[ClickEvent], modes: dict[int, str]) -> list[ClickEvent]:
    """`events` with each client address kept as its account's mode says."""
    if not modes:
        return list(events)
    kept = []
    for event in events:
        mode = modes.get(event.account_id)
        if mode == "none" and event.client_ip is not None:
            kept.append(event._replace(client_ip=None))
        elif mode == "truncated" and event.client_ip is not None:
            kept.append(event._replace(client_ip=truncated(event.client_ip)))
        else:  # full
            kept.append(event)
    return kept
