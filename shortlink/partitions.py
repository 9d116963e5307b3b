"""Time partitions of links and clicks: the periods, the tags, and making and dropping them.

links is partitioned by creation week, its `period` (whole weeks since
1970-01-01 00:00 UTC, a Thursday). A link's id carries its period in its high bits
(`period << 40 | n`, n from the sequence `links_sequence`) and its token carries it
in its first character, the period's *tag* (`ALPHABET[period % 62]`). A lookup by id
or by token therefore names the one partition to probe: `period_of_id`,
`token_periods`. The links made before partitioning are period 0 (`LEGACY`), one
partition looked up second until it is dropped.

A tag comes back every 62 weeks, so no two partitions that exist at the same time
may share one: a link lives at most MAX_LIFETIME_DAYS, its partition is dropped at
most GRACE_DAYS_MAX after its last link expired (see GRACE_DAYS_MAX), and a token
read at time t is looked for in the one period with its tag among the 60 weeks
before t's week, t's week and the week after it (`token_periods`; the week after:
the API's clock may run ahead of the redirect server's). `ensure` does not make a
partition while the one 62 weeks before it exists.

clicks is partitioned by month of `clicked_at` (fewer, larger partitions: clicks are
kept 400 days by default, and a query by link or campaign touches each partition).

Partitions are made ahead (`ensure`, at migration and hourly by the purge job) and
never on demand: there is no DEFAULT partition, so a row outside every partition is
refused rather than kept where no purge would find it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from shortlink import tokens
from shortlink.db import Connection
from shortlink.exceptions import PartitionError

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ID_BITS = 40
SEQUENCE_MASK = (1 << ID_BITS) - 1
LEGACY = 0  # the period of the links made before partitioning
TAGS = len(tokens.ALPHABET)  # a tag comes back every 62 periods
MAX_LIFETIME_DAYS = 365
# A week's partition holds links until 7 + 365 + grace days after it starts; the week
# with its tag 62 weeks on is made LINK_WEEKS_AHEAD before it starts, day (62 - 4) x 7
# = 406: so the grace must stay under 406 - 372 = 34 days.
GRACE_DAYS_MAX = 30
# Links partitions made ahead of the current week, clicks partitions ahead of this month.
LINK_WEEKS_AHEAD = 4
CLICK_MONTHS_AHEAD = 2
# Creating or detaching a partition waits this long at most for its lock, then gives up
# until the next run: a lock waiting in the queue blocks every query behind it.
LOCK_TIMEOUT = "200ms"
_ENSURE_LOCK_KEY = 0x5EED_9A27  # held while partitions are made (arbitrary constant)

_TAG_INDEX = {character: index for index, character in enumerate(tokens.ALPHABET)}


def period_of(moment: datetime) -> int:
    """The week of `moment`: whole weeks since the Unix epoch."""
    return (moment - _EPOCH) // WEEK


def period_start(period: int) -> datetime:
    return _EPOCH + period * WEEK


def period_of_id(link_id: int) -> int:
    return link_id >> ID_BITS


def first_id(period: int) -> int:
    """The smallest link id of `period`."""
    return period << ID_BITS


def id_windows(
    first: int, last: int, size: int, periods: Iterable[int] | None = None
) -> list[tuple[int, int]]:
    """Windows of at most `size` ids, in id order, that hold the links made from link
    `first` to link `last`. Within one period that is the range first..last; across
    periods it is, in each period between that exists (`periods`; default all), the same
    range of sequence numbers (the sequence grows with time whatever the period; the
    legacy links' ids are its first numbers), not the 2**40 ids between them."""
    low_period, high_period = period_of_id(first), period_of_id(last)
    if low_period == high_period:
        spans = [(first, last)]
    else:
        # Either way round: at a week boundary, clocks that differ can give a link of the
        # later week a smaller sequence number.
        low, high = sorted((first & SEQUENCE_MASK, last & SEQUENCE_MASK))
        between = range(low_period, high_period + 1) if periods is None else sorted(periods)
        spans = [
            (first_id(period) | low, first_id(period) | high)
            for period in between
            if low_period <= period <= high_period
        ]
    return [
        (start, min(end, start + size - 1))
        for span_start, end in spans
        for start in range(span_start, end + 1, size)
    ]


def tag(period: int) -> str:
    """The first character of every token made in `period`."""
    return tokens.ALPHABET[period % TAGS]


def token_periods(token: str, now: datetime) -> list[int]:
    """The partitions to look `token` up in, in order: its tag's period, then LEGACY."""
    index = _TAG_INDEX.get(token[:1])
    if index is None:
        return [LEGACY]
    newest = period_of(now) + 1
    return [newest - (newest - index) % TAGS, LEGACY]


def periods_in(column: str, periods: Iterable[int]) -> str:
    """`column IN (p, ...)`: the periods written into the statement, so the plan names the
    partitions to read. (A generic plan with `= ANY($n)` reads every partition: PostgreSQL
    prunes with array parameters only in a plan made for their values.) Integers only."""
    listed = ", ".join(str(int(period)) for period in sorted(set(periods)))
    return f"{column} IN ({listed})"


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of links (bounds are periods) or clicks (bounds are instants)."""

    name: str
    low: int | datetime | None  # None: MINVALUE
    high: int | datetime | None  # None: MAXVALUE


_BOUND = re.compile(r"FROM \((.+)\) TO \((.+)\)")


def _bound(text: str) -> int | datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    text = text.strip("'")
    if text.lstrip("-").isdigit():
        return int(text)
    return datetime.fromisoformat(text if "T" in text else text.replace(" ", "T")).astimezone(UTC)


async def partitions(conn: Connection, table: str) -> list[Partition]:
    """The partitions of `table` (links or clicks), oldest first."""
    async with conn.transaction():
        # Bounds are printed in the session's time zone.
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        rows = await conn.fetch(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = $1::regclass
            """,
            table,
        )
    found = []
    for row in rows:
        match = _BOUND.search(row["bound"])
        if match is None:
            raise PartitionError(f"{row['relname']}: unexpected bound {row['bound']!r}")
        found.append(Partition(row["relname"], _bound(match[1]), _bound(match[2])))
    return sorted(found, key=_order)


def _order(partition: Partition) -> tuple[int, float]:
    low = partition.low
    if low is None:
        return (0, 0.0)
    return (1, float(low) if isinstance(low, int) else low.timestamp())


def link_partition_name(period: int) -> str:
    return f"links_p{period}"


def click_partition_name(month: datetime) -> str:
    return f"clicks_m{month:%Y%m}"


async def ensure(
    conn: Connection, now: datetime | None = None, *, since: datetime | None = None
) -> list[str]:
    """Make the partitions needed from last week (links) or last month (clicks), or from
    `since` (data loaded with past times), to the ones ahead; the names of those made.
    Idempotent; concurrent runs (migrate, the purge of several forwarders) take turns.

    A partition that cannot be made now (its lock is busy, or the week 62 weeks before
    still holds its token tag) is left for the next run, unless it is needed now or next
    week: then PartitionError, so the failure is seen (links could not be created)."""
    now = now or datetime.now(UTC)
    await conn.execute("SELECT pg_advisory_lock($1)", _ENSURE_LOCK_KEY)
    try:
        made = await _ensure_clicks(conn, now, since)
        made += await _ensure_links(conn, now, since)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ENSURE_LOCK_KEY)
    return made


async def _ensure_links(conn: Connection, now: datetime, since: datetime | None) -> list[str]:
    made = []
    current = period_of(now)
    first = period_of(since) if since else current - 1
    existing = {p.name for p in await partitions(conn, "links")}
    for period in range(first, current + LINK_WEEKS_AHEAD + 1):
        name = link_partition_name(period)
        if name in existing:
            continue
        needed = period <= current + 1
        same_tag = link_partition_name(period - TAGS)
        if same_tag in existing:
            problem = f"cannot make {name}: {same_tag} has the same token tag and still exists"
            if needed:
                raise PartitionError(problem)
            log.warning(problem)
            continue
        if await _attach(conn, "links", name, str(period), str(period + 1), needed=needed):
            made.append(name)
    return made


async def _ensure_clicks(conn: Connection, now: datetime, since: datetime | None) -> list[str]:
    made = []
    clicks = await partitions(conn, "clicks")
    names = {p.name for p in clicks}
    month = month_start(since) if since else add_months(month_start(now), -1)
    last = add_months(month_start(now), CLICK_MONTHS_AHEAD)
    while month <= last:
        name = click_partition_name(month)
        # A month inside another partition (the legacy one) is covered already.
        if name not in names and not any(_covers(p, month) for p in clicks):
            high = add_months(month, 1)
            needed = month <= month_start(now)
            if await _attach(
                conn,
                "clicks",
                name,
                f"'{month.isoformat()}'",
                f"'{high.isoformat()}'",
                needed=needed,
            ):
                made.append(name)
        month = add_months(month, 1)
    return made


def _covers(partition: Partition, moment: datetime) -> bool:
    low, high = partition.low, partition.high
    return (low is None or (isinstance(low, datetime) and low <= moment)) and (
        high is None or (isinstance(high, datetime) and moment < high)
    )


async def _attach(
    conn: Connection, table: str, name: str, low: str, high: str, *, needed: bool = True
) -> bool:
    """Make an empty table like `table` and attach it: ATTACH takes only a SHARE UPDATE
    EXCLUSIVE lock on the parent, where CREATE TABLE ... PARTITION OF would block every
    reader of the table while it waits. False if its lock was busy and it is not `needed`
    yet (the next run makes it)."""
    key = "period" if table == "links" else "clicked_at"
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.execute(
                f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            # The bound as a check, so ATTACH need not scan (the table is empty anyway).
            await conn.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {name}_bound "
                f"CHECK ({key} >= {low} AND {key} < {high})"
            )
            await conn.execute(
                f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
            )
            await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound")
    except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError):
        if needed:
            raise PartitionError(f"cannot make {name} now: its lock is busy") from None
        log.warning("partition not made: its lock is busy", extra={"partition": name})
        return False
    log.info("partition made", extra={"partition": name})
    return True


async def detached(conn: Connection, table: str) -> tuple[list[str], list[str]]:
    """Partitions of `table` whose detach did not finish (left pending by a detach that
    timed out), and tables named like its partitions that are attached to nothing (a
    process stopped between detaching one and dropping it)."""
    rows = await conn.fetch(
        """
        SELECT c.relname, i.inhdetachpending AS pending
        FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
        WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
          AND (c.relname ~ ('^' || $1 || '_(p[0-9]+|m[0-9]{6}|legacy)$'))
          AND (i.inhrelid IS NULL OR i.inhdetachpending)
        """,
        table,
    )
    pending = sorted(row["relname"] for row in rows if row["pending"])
    orphans = sorted(row["relname"] for row in rows if row["pending"] is None)
    return pending, orphans


def link_partition_period(name: str) -> int:
    """The period of links partition `name` (links_legacy: LEGACY)."""
    return LEGACY if name == "links_legacy" else int(name.removeprefix("links_p"))
