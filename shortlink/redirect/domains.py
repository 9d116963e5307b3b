"""The branded domains a redirect worker serves, kept in memory (shortlink.domains).

Only verified domains are kept: name -> what the worker needs of it (its account,
not_found_url, expired_url, the two app-link documents as bytes ready to send).
The hit path asks `served(host)` once per tap: a Host header as sent is looked up
in a small memo (raw header -> its branded domain, SHORT, or None), so a tap costs
one header read and one dict lookup; the memo is bounded (a flood of odd Host
headers clears it) and cleared whenever the domains change.

SHORT stands for the hosts SHORT_DOMAIN links answer on: SHORT_DOMAIN's own name,
the names in SHORT_DOMAIN_ALIASES (internal service names), an IP address (load
balancer checks, `make run`, the tests), `localhost` and a request without a Host
(nobody outside can point either at us). Any other
name is None: a name pointed at our servers by a stranger serves no link. Without
SHORT_DOMAIN the worker cannot tell, and every host that is not branded is SHORT.

Kept in step like the accounts' expired URLs (shortlink.redirect.expired): a
change notifies `%name` (shortlink.changes.notify_domain); the listener hands the
name here and the `domain-reload` task reads those domains again, within
milliseconds. Every reconnect of the listener reads them all, and every poll reads
them all when the table changed (its row count or newest updated_at moved).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from shortlink import changes, domains
from shortlink.db import Executor
from shortlink.retry import Backoff, Retry

log = logging.getLogger(__name__)

MAX_MEMO = 4096  # distinct Host headers remembered
_MISSING = object()
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Served:
    """A verified domain as the redirect worker uses it."""

    name: str
    account_id: int
    not_found_url: str | None
    expired_url: str | None
    apple_app_site_association: bytes | None
    assetlinks: bytes | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Served:
        apple, assetlinks = row["apple_app_site_association"], row["assetlinks"]
        return cls(
            name=row["name"],
            account_id=row["account_id"],
            not_found_url=row["not_found_url"],
            expired_url=row["expired_url"],
            apple_app_site_association=None if apple is None else _compact(apple),
            assetlinks=None if assetlinks is None else _compact(assetlinks),
        )


def _compact(text: str) -> bytes:
    """A document as compact JSON (jsonb's text has spaces after every separator)."""
    return orjson.dumps(orjson.loads(text))


def normal_host(host: str) -> str:
    """A Host header's name: lower case, without its port or trailing dot."""
    host = host.lower()
    if host.endswith("]"):  # an IPv6 literal without a port
        return host
    name, colon, port = host.rpartition(":")
    if colon and (port.isdigit() or not port):  # "tx1.in:" has an empty port (RFC 9110)
        host = name
    return host.rstrip(".")


# A name (253), a trailing dot and a port: a longer Host header names no served host.
MAX_HOST = 253 + 1 + 6

# The hosts SHORT_DOMAIN links answer on (see above), as `served` answers them.
SHORT = Served(
    name="",
    account_id=0,
    not_found_url=None,
    expired_url=None,
    apple_app_site_association=None,
    assetlinks=None,
)


def is_address(name: str) -> bool:
    """Whether a normal host (normal_host) is an IP address, IPv6 in brackets."""
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class BrandedHosts:
    """Name -> Served for the verified domains; `served(host)` for the hit path.

    `short_names`: SHORT_DOMAIN's name and its aliases, in lower case without ports;
    None (SHORT_DOMAIN unset): every host that is not branded is SHORT.
    """

    def __init__(self, short_names: frozenset[str] | None = None) -> None:
        self.short_names = short_names
        self.domains: dict[str, Served] = {}  # the handler holds this very dict
        self._memo: dict[str, Served | None] = {}
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._table_state: tuple[int, datetime | None] | None = None
        self.reloads = 0

    def served(self, host: str | None) -> Served | None:
        """The branded domain a Host header names, SHORT, or None (a host we do not serve)."""
        if not host:
            return SHORT  # HTTP/1.0 without a Host: nothing to tell the hosts apart by
        if len(host) > MAX_HOST:
            # No name we serve is this long: not kept in the memo either.
            return SHORT if self.short_names is None else None
        found = self._memo.get(host, _MISSING)
        if found is _MISSING:
            found = self._find(normal_host(host))
            if len(self._memo) >= MAX_MEMO:
                self._memo.clear()
            self._memo[host] = found
        return found  # type: ignore[return-value]

    def _find(self, name: str) -> Served | None:
        found = self.domains.get(name)
        if found is not None:
            return found
        names = self.short_names
        if names is None or name in names or name == "localhost" or is_address(name):
            return SHORT
        return None

    def notified(self, payload: str) -> bool:
        """Queue a `%name` notification's domain for reading; False if it is not one."""
        if not payload.startswith(changes.DOMAIN):
            return False
        name = payload[len(changes.DOMAIN) :]
        if 0 < len(name) <= domains.MAX_NAME:
            self._pending.add(name)
            self._wake.set()
        return True

    def _apply(self, names: set[str] | None, rows: list[asyncpg.Record]) -> None:
        fresh = {row["name"]: Served.of(row) for row in rows}
        gone = (set(self.domains) if names is None else names) - set(fresh)
        for name in gone:
            self.domains.pop(name, None)
        self.domains.update(fresh)
        self._memo.clear()
        self.reloads += 1

    async def reload(self, conn: Executor) -> None:
        """Read every verified domain again (in place: the handler holds `domains`)."""
        state = await self._state(conn)
        self._apply(None, await domains.served(conn))
        self._table_state = state

    async def refresh(self, conn: Executor) -> None:
        """`reload` if the table changed since the last one (the poll's safety net)."""
        if await self._state(conn) != self._table_state:
            await self.reload(conn)

    async def _state(self, conn: Executor) -> tuple[int, datetime | None]:
        row = await conn.fetchrow("SELECT count(*) AS n, max(updated_at) AS at FROM domains")
        assert row is not None  # noqa: S101 - an aggregate always has a row
        return row["n"], row["at"]

    async def run(self, pool: asyncpg.Pool) -> None:
        """The domain-reload task: read the notified domains again as they arrive."""
        retry = Retry(Backoff(first=0.2, cap=1.0), on=_DB_ERRORS)
        while True:
            await self._wake.wait()
            self._wake.clear()
            names, self._pending = self._pending, set()
            try:
                rows = await domains.served(pool, sorted(names))
            except _DB_ERRORS as exc:
                log.warning("reading changed domains failed", extra={"error": repr(exc)})
                self._pending |= names
                self._wake.set()
                await retry.wait()
                continue
            retry.succeeded()
            self._apply(names, rows)
