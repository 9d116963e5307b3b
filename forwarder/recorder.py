"""Consume click events and record them: one PostgreSQL transaction per Kafka batch.

For each batch the transaction
1. inserts the clicks with their enrichment (forwarder.enrich: the user agent;
   shortlink.geoip: country and region of the client IP, placed before the
   account's IP storage mode cuts it, forwarder.privacy), idempotent on the
   event id (ON CONFLICT DO NOTHING ... RETURNING tells which are new: a
   replayed event changes nothing below), each with its link's phone number as
   it is now (none once erased, whatever the event carries);
2. in the same statement, records the first click of links clicked by a person
   for the first time (INSERT INTO first_clicks ... ON CONFLICT DO NOTHING: under
   concurrent forwarders exactly one event wins), each winner's link_click
   conversion (seed 000), and reads the link's callback destination, if its
   request named a callback URL (seed 001);
3. adds to the campaign counters the statistics read (totals, bots apart,
   browser / OS / device type / country, time to first click) and to the per-minute
   rollup the dashboard's time series read (campaign_minutes);
4. turns the new clicks into deliveries for the accounts' endpoints: at once
   when they (with those waiting) fill a batch, else into the outbox, where
   forwarder.delivery collects them when a batch fills up or the linger time
   passes; and each first click of a link with a callback into a CLICKTHRU event
   for that callback.
Only after it commits are the Kafka offsets committed, so a crash anywhere loses
nothing (the batch is consumed again) and counts nothing twice (step 1).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from forwarder import formats
from forwarder.config import ForwarderConfig
from forwarder.enrich import Client, classify
from forwarder.privacy import IpModes, applied
from shortlink import partitions
from shortlink.campaigns import counters
from shortlink.campaigns.counters import first_click_bucket
from shortlink.clickevent import ClickEvent, decode
from shortlink.db import Connection, is_statement_error, is_transient, needs_new_connections
from shortlink.exceptions import InvalidClickEvent
from shortlink.geoip import PACKAGED, Locator, Place
from shortlink.kafka import Holes, contiguous
from shortlink.retry import Backoff, Retry

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Waits before starting the Kafka consumer again: 0.5 s doubling, at most 5 s.
_CONSUMER_START = Backoff(first=0.5, cap=5.0)
# Waits before writing a batch (or its dead events) again after a transient database
# error: 0.1 s doubling, at most 5 s.
_RECORD_RETRY = Backoff(first=0.1, cap=5.0)


def to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _text(value: str | None) -> str | None:
    """Text PostgreSQL can store: NUL (which a client may send) becomes U+FFFD."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _ip_or_none(value: str | None) -> str | None:
    """The address if it is one (PostgreSQL's inet would reject the whole batch)."""
    if value is None:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
        except OSError:
            continue
        return value
    return None


@dataclass
class Outcome:
    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    unknown_links: int = 0
    bots: int = 0
    first_clicks: int = 0
    deliveries: int = 0
    first_click_events: list[str] = field(default_factory=list)

    def plus(self, other: Outcome) -> Outcome:
        return Outcome(
            self.received + other.received,
            self.recorded + other.recorded,
            self.duplicates + other.duplicates,
            self.unknown_links + other.unknown_links,
            self.bots + other.bots,
            self.first_clicks + other.first_clicks,
            self.deliveries + other.deliveries,
            self.first_click_events + other.first_click_events,
        )


class Received(NamedTuple):
    """A decoded event, with the message it came from (a NamedTuple: one is made per
    event, at a third of a frozen dataclass's cost)."""

    event: ClickEvent
    value: bytes
    where: tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True)
class DeadEvent:
    """A message that cannot be recorded, and why."""

    where: tuple[str, int, int]
    value: bytes | None
    error: str


MAX_ERROR_CHARS = 2_000  # of the error kept with a dead event


def _error_text(exc: BaseException) -> str:
    """Why an event cannot be recorded, as stored: PostgreSQL's message (with its
    SQLSTATE) or the Python exception, bounded and storable as text."""
    if isinstance(exc, asyncpg.PostgresError):
        text = f"refused by PostgreSQL ({exc.sqlstate}): {exc}"
    else:
        text = f"cannot be recorded: {exc!r}"
    return text.replace("\x00", "\ufffd")[:MAX_ERROR_CHARS]


async def record(
    conn: Connection,
    events: Sequence[ClickEvent],
    *,
    batch_size: int,
    locator: Locator = PACKAGED,
    ip_modes: dict[int, str] | None = None,
) -> Outcome:
    """Record one batch of events in one transaction (see the module docstring);
    `ip_modes`: the accounts that keep less than the full client address
    (forwarder.privacy), applied after the full address has been placed."""
    if not events:
        return Outcome()
    # Event ids as PostgreSQL writes them (lower case; shortlink.clickevent.decode makes
    # them so): the statement's answer names events by them.
    unique = list(
        {
            e.event_id: e
            for e in (
                e if e.event_id.islower() else e._replace(event_id=e.event_id.lower())
                for e in events
            )
        }.values()
    )
    clients = [classify(event.user_agent, event.method) for event in unique]
    locate = locator.locate
    places = {event.event_id: locate(event.client_ip) for event in unique}
    if ip_modes:
        unique = applied(unique, ip_modes)
    outcome = Outcome(received=len(events))
    async with conn.transaction():
        recorded = await _insert_clicks(conn, unique, clients, places)
        inserted, erased = recorded.inserted, recorded.erased
        # A click keeps the phone number its link has now: none once it was erased
        # (POST /v1/erasures), even for a tap made before and recorded after.
        fresh = [
            (e._replace(phone_number=None) if e.event_id in erased else e, c)
            for e, c in zip(unique, clients, strict=True)
            if e.event_id in inserted
        ]
        not_inserted = [e for e in unique if e.event_id not in inserted]
        already = await _already_recorded(conn, not_inserted)
        outcome.recorded = len(fresh)
        outcome.duplicates = len(events) - len(unique) + already
        # The others name a link that does not exist, or not in that account.
        outcome.unknown_links = len(not_inserted) - already
        outcome.bots = sum(1 for _, client in fresh if client.is_bot)
        if not fresh:
            return outcome
        firsts, callbacks = _firsts(fresh, recorded)
        outcome.first_clicks = len(firsts)
        outcome.first_click_events = [e.event_id for e, _ in firsts]
        await _count(conn, fresh, firsts, places)
        await _count_minutes(conn, fresh, firsts)
        outcome.deliveries = await _enqueue(conn, fresh, firsts, batch_size, callbacks)
    return outcome


@dataclass(frozen=True)
class _Column:
    """One column of the clicks insert: its name, the Python expression of a click's value
    (of `e` the event, `c` its client, `p` its place), and how PostgreSQL reads it from
    the JSON element `r->>i` (`{}` stands for that text)."""

    name: str
    value: str
    read: str = "{}"


# The clicks insert, one line per column. Rows travel as one JSON array of arrays:
# orjson writes it in C and PostgreSQL unpacks it. Measured against typed arrays
# (unnest($1::uuid[], $2::int8[], ...), asyncpg's binary encoding; loadtests/
# bench_recorder.py, batches of 1,000, same session): 17.8 + 39.3 and 18.2 + 42.3 us
# (forwarder + PostgreSQL per click) for JSON against 28.1 + 56.7 and 27.5 + 49.3 us
# for arrays: asyncpg encodes array elements in Python, and PostgreSQL materialises
# each of unnest's 22 arrays before it zips them.
_CLICK_COLUMNS = (
    _Column("event_id", "e.event_id", "{}::uuid"),
    _Column("link_id", "e.link_id", "{}::bigint"),
    _Column("account_id", "e.account_id", "{}::bigint"),
    _Column("clicked_at", "e.clicked_at_ms", "to_timestamp({}::bigint / 1000.0)"),
    _Column("method", "e.method"),
    _Column("user_agent", "_text(e.user_agent)"),
    _Column("client_ip", "_ip_or_none(e.client_ip)", "{}::inet"),
    _Column("referer", "_text(e.referer)"),
    _Column("warning_page_served", "e.warning_page_served", "{}::boolean"),
    _Column("browser", "c.browser"),
    _Column("os", "c.os"),
    _Column("device_type", "c.device_type"),
    _Column("device_name", "c.device_name"),
    _Column("device_manufacturer", "c.device_manufacturer"),
    _Column("is_bot", "c.is_bot", "{}::boolean"),
    _Column("target_url", "e.target_url"),
    _Column("phone_number", "e.phone_number"),
    _Column("client_ref", "e.client_ref"),
    _Column("client_identifier", "e.client_identifier"),
    _Column("shortened_at", "e.shortened_at_ms", "to_timestamp({}::bigint / 1000.0)"),
    _Column("country", "p.country"),
    _Column("region", "_text(p.region)"),
    _Column("destination", "e.destination"),
    _Column("rule_index", "e.rule_index", "{}::smallint"),
    _Column("variant_index", "e.variant_index", "{}::smallint"),
)
# One function makes a click's row (one call per click; a call per column cost ~2 us a
# click more), written from the table above: constant code of this module.
_click_row: Callable[[ClickEvent, Client, Place], list[object]] = eval(  # noqa: S307
    f"lambda e, c, p: [{', '.join(column.value for column in _CLICK_COLUMNS)}]",
    {"_text": _text, "_ip_or_none": _ip_or_none},
)
_NAMES = ", ".join(column.name for column in _CLICK_COLUMNS)
_ROW = ", ".join(
    f"{column.read.format(f'(r->>{i})')} AS {column.name}"
    for i, column in enumerate(_CLICK_COLUMNS)
)
# The link's number as it is now: none once erased, whatever the event carries.
_SELECTED = ", ".join(
    "CASE WHEN l.phone_number = e.phone_number THEN e.phone_number END AS phone_number"
    if column.name == "phone_number"
    else f"e.{column.name}"
    for column in _CLICK_COLUMNS
)


# One statement records a batch's clicks and its first clicks: the events are parsed and
# their links read once (two statements did both twice: ~2 us a click more, docs/
# benchmarks.md). It comes in two forms, `_statement(idempotent)`:
# - the plain one, tried first under a savepoint: plain inserts, a first click only for a
#   link that has none yet (NOT EXISTS). It fails with a unique violation on a replayed
#   event or a first click another forwarder is recording at the same moment;
# - the idempotent one, run after that failure: ON CONFLICT DO NOTHING on both tables.
#   ON CONFLICT costs each row an index probe more and a WAL record more (PostgreSQL's
#   speculative insertion): ~2-3 us a click measured, paid only for the rare batch that
#   needs it.
# The parts:
# - `joined`: the events whose link exists in their account, with the link's callback,
#   and whether the link's number is no longer the event's (erased).
# - `ins`: the clicks (a replayed event is not returned, so nothing below counts it
#   twice).
# - `won`: each link's earliest click by a person in the batch (then by event id: the
#   rule of `_earlier`) becomes its first click unless the link has one: the primary key
#   makes one event win across concurrent forwarders (a second insert of the link waits
#   for the first to commit, then fails or does nothing), in one lock order (link id).
#   Links made before partitioning (period LEGACY) marked by a forwarder of an earlier
#   release in links.first_clicked_at are skipped; no other link is ever marked there.
# - `converted`: only a winner gets its link_click conversion: exactly one per link.
# The answer is one row of arrays (a row per click cost the forwarder ~2 us a click to
# read): how many clicks were inserted, and their event ids only when that is not every
# event given ($2); the events whose link's number is not theirs; the links won; each
# clicked link's enabled callback. Joining the CTEs to one another instead is planned as
# nested loops over them: quadratic in the batch.
def _statement(idempotent: bool) -> str:
    """The statement that records a batch's clicks and first clicks (above)."""
    on_conflict = "ON CONFLICT ({}) DO NOTHING" if idempotent else ""
    no_first_yet = (
        ""
        if idempotent
        else "AND NOT EXISTS (SELECT FROM first_clicks f WHERE f.link_id = c.link_id)"
    )
    return f"""
    WITH joined AS MATERIALIZED (
        SELECT {_SELECTED}, l.callback_id AS link_callback,
               e.phone_number IS NOT NULL
               AND l.phone_number IS DISTINCT FROM e.phone_number AS erased
        FROM (SELECT {_ROW} FROM jsonb_array_elements($1::jsonb) AS r) AS e
        JOIN links l ON l.id = e.link_id AND l.period = (e.link_id >> 40)::int
                    AND l.account_id = e.account_id AND PERIODS
    ), ins AS (
        INSERT INTO clicks ({_NAMES})
        SELECT {_NAMES} FROM joined
        {on_conflict.format("event_id, clicked_at")}
        RETURNING event_id, link_id, clicked_at, is_bot
    ), candidate AS MATERIALIZED (
        SELECT DISTINCT ON (link_id) link_id, clicked_at FROM ins
        WHERE NOT is_bot
        ORDER BY link_id, clicked_at, event_id
    ), won AS (
        INSERT INTO first_clicks (link_id, clicked_at)
        SELECT c.link_id, c.clicked_at FROM candidate c
        WHERE ((c.link_id >> 40)::int <> {partitions.LEGACY} OR NOT EXISTS (
            SELECT FROM links l
            WHERE l.period = {partitions.LEGACY} AND l.id = c.link_id
              AND l.first_clicked_at IS NOT NULL
        )) {no_first_yet}
        ORDER BY c.link_id
        {on_conflict.format("link_id")}
        RETURNING link_id, clicked_at
    ), converted AS (
        INSERT INTO conversions (link_id, event, disposition, occurred_at)
        SELECT link_id, 'link_click', 'positive', clicked_at FROM won
    )
    SELECT i.inserted, i.event_ids, x.erased, w.won, c.links, c.callbacks
    FROM (SELECT count(*) AS inserted,
                 CASE WHEN count(*) <> $2
                      THEN coalesce(array_agg(event_id), '{{}}') END AS event_ids
          FROM ins) AS i,
         (SELECT array_agg(event_id) AS erased FROM joined WHERE erased) AS x,
         (SELECT array_agg(link_id) AS won FROM won) AS w,
         (SELECT array_agg(j.link_id) AS links, array_agg(callback.id) AS callbacks
          FROM joined j
          JOIN endpoints callback ON callback.id = j.link_callback AND callback.enabled
          WHERE j.link_callback IS NOT NULL) AS c
"""


_RECORD_CLICKS = _statement(idempotent=False)
_RECORD_CLICKS_AGAIN = _statement(idempotent=True)


@dataclass
class _Recorded:
    """What the statement of a batch did."""

    inserted: set[str]  # the events recorded
    erased: set[str]  # events whose link's phone number is no longer theirs
    won: list[int]  # links whose first click this batch holds
    callbacks: dict[int, int]  # clicked link -> its enabled callback endpoint


async def _insert_clicks(
    conn: Connection,
    events: Sequence[ClickEvent],
    clients: Sequence[Client],
    places: dict[str, Place],
) -> _Recorded:
    """Insert the clicks of links that exist in their accounts, and the first clicks among
    them: the plain statement under a savepoint, the idempotent one if it meets a
    conflict (`_statement`)."""
    row = _click_row
    rows = orjson.dumps(
        [row(e, c, places[e.event_id]) for e, c in zip(events, clients, strict=True)]
    ).decode()
    periods = _periods(e.link_id for e in events)
    try:
        async with conn.transaction():
            (answer,) = await conn.fetch(
                _RECORD_CLICKS.replace("PERIODS", periods), rows, len(events)
            )
    except asyncpg.UniqueViolationError:  # a replay, or a first click recorded meanwhile
        (answer,) = await conn.fetch(
            _RECORD_CLICKS_AGAIN.replace("PERIODS", periods), rows, len(events)
        )
    event_ids = answer["event_ids"]
    return _Recorded(
        inserted=(
            {e.event_id for e in events}
            if event_ids is None
            else {str(event_id) for event_id in event_ids}
        ),
        erased={str(event_id) for event_id in answer["erased"] or ()},
        won=list(answer["won"] or ()),
        callbacks=dict(zip(answer["links"] or (), answer["callbacks"] or (), strict=True)),
    )


def _periods(link_ids: Iterable[int]) -> str:
    """`l.period IN (...)`: the links partitions these links are in (ids carry their
    period), written into the statement so that its plan reads only those partitions and
    can be kept (a generic plan with `= ANY($n)` reads every partition)."""
    return partitions.periods_in("l.period", {partitions.period_of_id(i) for i in link_ids})


async def _already_recorded(conn: Connection, events: list[ClickEvent]) -> int:
    """How many of these events were recorded before (replays): looked up with their
    clicked_at, made as the insert makes it, so only their partition is read."""
    if not events:
        return 0
    count: int = await conn.fetchval(
        """
        SELECT count(*) FROM clicks
        WHERE (event_id, clicked_at) IN (
            SELECT id, to_timestamp(ms / 1000.0) FROM unnest($1::uuid[], $2::int8[]) AS u(id, ms)
        )
        """,
        [e.event_id for e in events],
        [e.clicked_at_ms for e in events],
    )
    return count


def _firsts(
    fresh: Sequence[tuple[ClickEvent, Client]], recorded: _Recorded
) -> tuple[list[tuple[ClickEvent, Client]], dict[int, int]]:
    """The first clicks the statement recorded, as (event, client) in link order, and the
    enabled callback of each of their links that has one."""
    won = set(recorded.won)
    earliest: dict[int, tuple[ClickEvent, Client]] = {}
    for event, client in fresh:
        if client.is_bot or event.link_id not in won:
            continue
        known = earliest.get(event.link_id)
        if known is None or _earlier(event, known[0]):
            earliest[event.link_id] = (event, client)
    if len(earliest) != len(won):  # the statement and this module disagree: a bug
        log.error(
            "first clicks recorded for links without an event of this batch",
            extra={"links": sorted(won - set(earliest))[:10]},
        )
    callbacks = {link: endpoint for link, endpoint in recorded.callbacks.items() if link in won}
    return [earliest[link_id] for link_id in sorted(earliest)], callbacks


def _earlier(event: ClickEvent, other: ClickEvent) -> bool:
    """`event` comes first as the statement orders a link's clicks: by time, then event id
    (PostgreSQL compares uuids as their 16 bytes)."""
    if event.clicked_at_ms != other.clicked_at_ms:
        return event.clicked_at_ms < other.clicked_at_ms
    return uuid.UUID(event.event_id).bytes < uuid.UUID(other.event_id).bytes


async def _count(
    conn: Connection,
    fresh: Sequence[tuple[ClickEvent, Client]],
    firsts: Sequence[tuple[ClickEvent, Client]],
    places: dict[str, Place],
) -> None:
    # One count per (campaign, client, country) first: a batch holds few distinct user
    # agents (enrichment hands out one Client object per agent) and few countries, so
    # this is one dict update per click, and the per-dimension counts are made from the
    # few combinations.
    combos: Counter[tuple[int, str | None, int, str | None]] = Counter()
    by_identity: dict[int, Client] = {}
    for event, client in fresh:
        country = places[event.event_id].country
        combos[(event.account_id, event.client_identifier, id(client), country)] += 1
        by_identity[id(client)] = client
    totals: Counter[tuple[int, str, str]] = Counter()
    breakdown: Counter[tuple[int, str, str, str]] = Counter()
    for (account_id, name, identity, country), count in combos.items():
        client = by_identity[identity]
        campaign = (account_id, name or "")
        if client.is_bot:
            totals[(*campaign, "bot")] += count
            continue
        totals[(*campaign, "total")] += count
        breakdown[(*campaign, "browser", client.browser or counters.OTHER)] += count
        breakdown[(*campaign, "os", client.os or counters.OTHER)] += count
        breakdown[(*campaign, "device_type", client.device_type)] += count
        breakdown[(*campaign, "country", country or "unknown")] += count
    histogram: Counter[tuple[int, str, int]] = Counter()
    for event, _ in firsts:
        campaign = (event.account_id, event.client_identifier or "")
        totals[(*campaign, "unique")] += 1
        histogram[(*campaign, first_click_bucket(event.shortened_at_ms, event.clicked_at_ms))] += 1

    campaigns = sorted({(account, name) for account, name, _ in totals})
    await conn.execute(
        """
        INSERT INTO campaign_stats (account_id, campaign, total_clicks, unique_clicks, bot_clicks)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
        ON CONFLICT (account_id, campaign) DO UPDATE SET
            total_clicks = campaign_stats.total_clicks + excluded.total_clicks,
            unique_clicks = campaign_stats.unique_clicks + excluded.unique_clicks,
            bot_clicks = campaign_stats.bot_clicks + excluded.bot_clicks
        """,
        [account for account, _ in campaigns],
        [name for _, name in campaigns],
        [totals[(a, n, "total")] for a, n in campaigns],
        [totals[(a, n, "unique")] for a, n in campaigns],
        [totals[(a, n, "bot")] for a, n in campaigns],
    )
    if breakdown:
        keys = sorted(breakdown)
        # A value counts apart only if the campaign already counts it, or while the
        # campaign counts fewer than VALUES_KEPT - 1 values in that dimension besides
        # OTHER (the new values of a batch by clicks, most first); after that it counts
        # as OTHER. Whatever
        # user agents arrive, a campaign keeps at most VALUES_KEPT rows per dimension
        # (a few more when forwarders add values at the same moment).
        await conn.execute(
            """
            WITH given AS (
                SELECT i.*, b.value IS NOT NULL AS known
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                     AS i (account_id, campaign, dimension, value, clicks)
                LEFT JOIN campaign_breakdown b
                       ON (b.account_id, b.campaign, b.dimension, b.value)
                        = (i.account_id, i.campaign, i.dimension, i.value)
            ), ranked AS (
                SELECT g.*, row_number() OVER (
                    PARTITION BY g.account_id, g.campaign, g.dimension, g.known
                    ORDER BY g.clicks DESC, g.value) AS newcomer
                FROM given g
            ), placed AS (
                SELECT r.account_id, r.campaign, r.dimension, r.clicks,
                       CASE WHEN r.known OR r.value = $7 THEN r.value
                            WHEN r.newcomer < $6 - (
                                SELECT count(*) FROM campaign_breakdown c
                                WHERE c.account_id = r.account_id AND c.campaign = r.campaign
                                  AND c.dimension = r.dimension AND c.value <> $7)
                            THEN r.value
                            ELSE $7 END AS value
                FROM ranked r
            )
            INSERT INTO campaign_breakdown (account_id, campaign, dimension, value, clicks)
            SELECT account_id, campaign, dimension, value, sum(clicks)::bigint FROM placed
            GROUP BY account_id, campaign, dimension, value
            ORDER BY account_id, campaign, dimension, value
            ON CONFLICT (account_id, campaign, dimension, value)
            DO UPDATE SET clicks = campaign_breakdown.clicks + excluded.clicks
            """,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [breakdown[k] for k in keys],
            counters.VALUES_KEPT,
            counters.OTHER,
        )
    if histogram:
        keys_h = sorted(histogram)
        await conn.execute(
            """
            INSERT INTO campaign_first_click (account_id, campaign, bucket, links)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::bigint[])
            ON CONFLICT (account_id, campaign, bucket)
            DO UPDATE SET links = campaign_first_click.links + excluded.links
            """,
            [k[0] for k in keys_h],
            [k[1] for k in keys_h],
            [k[2] for k in keys_h],
            [histogram[k] for k in keys_h],
        )


async def _count_minutes(
    conn: Connection,
    fresh: Sequence[tuple[ClickEvent, Client]],
    firsts: Sequence[tuple[ClickEvent, Client]],
) -> None:
    """Add the batch to campaign_minutes (the dashboard's time series): one statement."""
    # (account, campaign, minute ms) -> [taps, first taps, bot taps, first ms, last ms]
    minutes: dict[tuple[int, str, int], list[int]] = {}
    for event, client in fresh:
        at = event.clicked_at_ms
        key = (event.account_id, event.client_identifier or "", at - at % 60_000)
        row = minutes.setdefault(key, [0, 0, 0, at, at])
        row[2 if client.is_bot else 0] += 1
        row[3], row[4] = min(row[3], at), max(row[4], at)
    for event, _ in firsts:
        at = event.clicked_at_ms
        minutes[(event.account_id, event.client_identifier or "", at - at % 60_000)][1] += 1
    await conn.execute(
        """
        INSERT INTO campaign_minutes (account_id, campaign, minute, taps, first_taps, bot_taps,
                                      first_at, last_at)
        SELECT (r->>0)::bigint, r->>1, to_timestamp((r->>2)::bigint / 1000.0), (r->>3)::bigint,
               (r->>4)::bigint, (r->>5)::bigint, to_timestamp((r->>6)::bigint / 1000.0),
               to_timestamp((r->>7)::bigint / 1000.0)
        FROM jsonb_array_elements($1::jsonb) AS r
        ON CONFLICT (account_id, campaign, minute) DO UPDATE SET
            taps = campaign_minutes.taps + excluded.taps,
            first_taps = campaign_minutes.first_taps + excluded.first_taps,
            bot_taps = campaign_minutes.bot_taps + excluded.bot_taps,
            first_at = least(campaign_minutes.first_at, excluded.first_at),
            last_at = greatest(campaign_minutes.last_at, excluded.last_at)
        """,
        orjson.dumps([(*key, *minutes[key]) for key in sorted(minutes)]).decode(),
    )


async def _enqueue(
    conn: Connection,
    fresh: Sequence[tuple[ClickEvent, Client]],
    firsts: Sequence[tuple[ClickEvent, Client]],
    batch_size: int,
    callbacks: dict[int, int],
) -> int:
    """Make deliveries for the accounts' endpoints and the links' callbacks (one
    CLICKTHRU event per first click); return how many were made."""
    accounts = sorted({event.account_id for event, _ in fresh})
    endpoints = await conn.fetch(
        """
        SELECT id, account_id, format, mode FROM endpoints
        WHERE account_id = ANY($1::bigint[]) AND enabled
        ORDER BY id
        """,
        accounts,
    )
    made: list[tuple[str, int, str, bytes, int, datetime]] = []
    now = datetime.now(UTC)
    for endpoint in endpoints:
        account = endpoint["account_id"]
        if endpoint["format"] == "clickthru" or endpoint["mode"] == "first":
            chosen = [(e, c) for e, c in firsts if e.account_id == account]
        else:
            chosen = [(e, c) for e, c in fresh if e.account_id == account and not c.is_bot]
        if not chosen:
            continue
        if endpoint["format"] == "clickthru":
            for event, client in chosen:
                request_id = str(uuid.uuid4())
                body = formats.render("clickthru", request_id, [formats.detail(event, client)])
                made.append(
                    (
                        request_id,
                        endpoint["id"],
                        "clickthru",
                        body,
                        1,
                        to_datetime(event.clicked_at_ms),
                    )
                )
            continue
        made.extend(await _batch(conn, endpoint["id"], endpoint["format"], chosen, batch_size, now))
    for event, client in firsts:
        callback = callbacks.get(event.link_id)
        if callback is not None:
            request_id = str(uuid.uuid4())
            body = formats.render("clickthru", request_id, [formats.detail(event, client)])
            made.append(
                (request_id, callback, "clickthru", body, 1, to_datetime(event.clicked_at_ms))
            )
    if made:
        await conn.execute(
            """
            INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                    oldest_click_at)
            SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bytea[],
                                 $5::integer[], $6::timestamptz[])
            """,
            *(list(column) for column in zip(*made, strict=True)),
        )
    return len(made)


def _stored(
    item: tuple[str, formats.Detail, datetime, bytes | None],
) -> tuple[str, bytes, datetime]:
    """A click of a batch as the outbox keeps it: its stored bytes, if it had them."""
    event_id, detail, enqueued_at, stored = item
    return event_id, stored if stored is not None else formats.encode_detail(detail), enqueued_at


async def _batch(
    conn: Connection,
    endpoint_id: int,
    format: str,
    chosen: Sequence[tuple[ClickEvent, Client]],
    batch_size: int,
    now: datetime,
) -> list[tuple[str, int, str, bytes, int, datetime]]:
    """Batches of the outbox's waiting clicks plus the new ones, when they fill at least
    one: all of them go, in as few batches as hold them, of near-equal sizes (1,480 clicks:
    15 batches of 98 or 99), rather than full ones and a rest that the outbox would keep
    until the next transaction read it back (two statements a transaction, ~1 us of
    server CPU per click at 7,000 clicks/s). Fewer than a batch wait in the outbox."""
    waiting = await conn.fetch(
        """
        DELETE FROM outbox WHERE endpoint_id = $1 AND format = $2
        RETURNING id, event_id, detail, enqueued_at
        """,
        endpoint_id,
        format,  # clicks waiting in another format are batched in it by forwarder.delivery
    )
    # A waiting row this version cannot decode or render (written by another version,
    # say) goes back to the outbox as it was: forwarder.outbox renders it on its own or
    # keeps it as a dead letter. It must not fail the transaction that records clicks.
    back: list[tuple[str, bytes, datetime]] = []
    pending: list[tuple[str, formats.Detail, datetime, bytes | None]] = []
    for row in sorted(waiting, key=lambda r: r["id"]):
        try:
            detail = formats.decode_detail(row["detail"])
        except Exception:  # noqa: BLE001 - left to the outbox loop, which keeps the error
            back.append((str(row["event_id"]), row["detail"], row["enqueued_at"]))
            continue
        pending.append((str(row["event_id"]), detail, row["enqueued_at"], row["detail"]))
    pending += [
        (event.event_id, formats.detail(event, client), now, None) for event, client in chosen
    ]
    total = len(pending)
    count = -(-total // batch_size) if total >= batch_size else 0  # batches: ceil, or none
    made = []
    for n in range(count):
        group = pending[n * total // count : (n + 1) * total // count]
        request_id = str(uuid.uuid4())
        try:
            body = formats.render(format, request_id, [item[1] for item in group])
        except Exception:  # noqa: BLE001 - the outbox loop renders them one by one
            back += [_stored(item) for item in group]
            continue
        made.append((request_id, endpoint_id, format, body, len(group), min(i[2] for i in group)))
    if not count:
        back += [_stored(item) for item in pending]
    if back:
        await conn.execute(
            """
            INSERT INTO outbox (endpoint_id, format, event_id, detail, enqueued_at)
            SELECT $1, $5, * FROM unnest($2::uuid[], $3::bytea[], $4::timestamptz[])
            ON CONFLICT (endpoint_id, event_id) DO NOTHING
            """,
            endpoint_id,
            [item[0] for item in back],
            [item[1] for item in back],
            [item[2] for item in back],
            format,
        )
    return made


# A fetch is answered at once with this much waiting (the consumer's records also stop at
# CONSUME_MAX_RECORDS): about 2,500 click events.
FETCH_MIN_BYTES = 1 << 20


def consumer_settings(config: ForwarderConfig) -> dict[str, Any]:
    """The forwarder's AIOKafkaConsumer arguments (loadtests/rejoin.py measures them).

    With an instance id the process is a static member of the group (KIP-345): when it
    restarts under the same id it gets its own partitions back without a rebalance, so
    the other members do not stop. Either way a member that stops leaves the group at
    once (Recorder.run), and one that dies is dropped after the session timeout.
    """
    return {
        "bootstrap_servers": config.service.kafka_bootstrap_servers,
        "group_id": config.group_id,
        "group_instance_id": config.instance_id,
        "client_id": "shortlink-forwarder",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",  # a new group misses no click
        # The broker holds a fetch until FETCH_MIN_BYTES are there or the linger has
        # passed, so a transaction records what arrived meanwhile rather than the few
        # events of the moment: at 7,000 clicks/s, 250 ms made 1,259 events a transaction
        # instead of 367, and a click cost 20 + 31 us of forwarder and PostgreSQL CPU
        # instead of 32 + 48 (docs/benchmarks.md).
        "fetch_max_wait_ms": int(config.consume_linger * 1000),
        "fetch_min_bytes": FETCH_MIN_BYTES,
        "max_poll_records": config.consume_max_records,
        # A member silent this long is dead and its partitions go to the others; a
        # heartbeat is also how a member learns of a rebalance, so several per session.
        "session_timeout_ms": int(config.session_timeout * 1000),
        "heartbeat_interval_ms": min(1_000, int(config.session_timeout * 1000) // 3),
    }


async def leave(consumer: AIOKafkaConsumer) -> None:
    """Stop consuming and leave the group at once, so the other members take this one's
    partitions now rather than after the session timeout.

    aiokafka's stop sends LeaveGroup only for a dynamic member of a generation above 0:
    KIP-345 has a static member keep its place through a restart, and tansu numbers a
    group's first generation 0, so there a member that stops never left (loadtests/
    rejoin.py: the others waited the whole session timeout and a rejoin). A forwarder
    that stops is going away, or is replaced by one that joins at once, so it leaves
    either way: the consumer's coordinator sends LeaveGroup (v1, by member id, which
    Kafka and tansu accept for a static member too) whenever it has a member id, at the
    point of its stop where aiokafka would. aiokafka has no public way to ask for this.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:

        async def leave_group() -> None:
            if coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID:
                request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
                try:
                    await coordinator._send_req(request)
                except KafkaError as exc:
                    log.warning("leaving the consumer group failed", extra={"error": repr(exc)})
            coordinator.reset_generation()

        coordinator._maybe_leave_group = leave_group
    await consumer.stop()


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forgets where revoked partitions were: their next owner moves them on."""

    def __init__(self, holes: Holes) -> None:
        self._holes = holes

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._holes.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


class Recorder:
    """The consume -> record -> commit loop of one forwarder process."""

    def __init__(
        self,
        config: ForwarderConfig,
        pool: asyncpg.Pool,
        on_deliveries: Callable[[], None],
        locator: Locator = PACKAGED,
    ) -> None:
        self._config = config
        self.locator = locator
        self._pool = pool
        self._on_deliveries = on_deliveries
        self._consumer: AIOKafkaConsumer | None = None
        self.totals = Outcome()
        self.invalid = 0  # messages that were not click events
        self.dead = 0  # click events that could not be recorded (kept in dead_events)
        self.isolations = 0  # batches split to find the events that made them fail
        self.batches = 0
        self.committed: dict[TopicPartition, int] = {}  # for the lag metric
        self.holes = Holes()
        self.ip_modes = IpModes()

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self._consumer

    async def run(self) -> None:
        consumer = await self._start_consumer()
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=500, max_records=self._config.consume_max_records
                )
                batches = await contiguous(consumer, batches, self.holes, grouped=True)
                if not batches:
                    continue
                events, dead = self._decode(batches)
                if dead:
                    await self._keep_dead(dead)
                if events:
                    outcome = await self._record_with_retries(events)
                    self._add(outcome)
                    if outcome.deliveries:
                        self._on_deliveries()
                offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
                try:
                    await consumer.commit(offsets)
                    self.committed.update(offsets)
                except (CommitFailedError, KafkaError) as exc:
                    # Partitions moved to another member: it consumes these events again,
                    # which records nothing twice.
                    log.warning("offset commit failed", extra={"error": repr(exc)})
        finally:
            self._consumer = None
            await leave(consumer)

    async def _start_consumer(self) -> AIOKafkaConsumer:
        service = self._config.service
        retry = Retry(_CONSUMER_START, on=(KafkaError,))
        while True:
            consumer = AIOKafkaConsumer(**consumer_settings(self._config))
            consumer.subscribe([service.click_topic], listener=_Revoked(self.holes))
            try:
                await consumer.start()
            except asyncio.CancelledError:
                await asyncio.shield(consumer.stop())
                raise
            except KafkaError as exc:
                await consumer.stop()
                delay = retry.failed()
                if retry.failures % 10 == 1:
                    log.warning(
                        "Kafka is not available", extra={"error": repr(exc), "retry_in": delay}
                    )
                await asyncio.sleep(delay)
                continue
            self._consumer = consumer
            log.info(
                "consuming", extra={"topic": service.click_topic, "group": self._config.group_id}
            )
            return consumer

    def partitions(self) -> int | None:
        """How many partitions of the click topic this process owns now."""
        consumer = self._consumer
        return None if consumer is None else len(consumer.assignment())

    def lag(self) -> int | None:
        """Click events on the broker not yet recorded, over this process's partitions."""
        consumer = self._consumer
        if consumer is None:
            return None
        total = 0
        for tp in consumer.assignment():
            # Known once this process has fetched from and committed on the partition.
            highwater, done = consumer.highwater(tp), self.committed.get(tp)
            if highwater is not None and done is not None:
                total += max(0, highwater - done)
        return total

    def _decode(self, batches: dict[Any, list[Any]]) -> tuple[list[Received], list[DeadEvent]]:
        events: list[Received] = []
        dead: list[DeadEvent] = []
        for tp, records in batches.items():
            for record in records:
                where = (tp.topic, tp.partition, record.offset)
                try:
                    events.append(Received(decode(record.value), record.value, where))
                except InvalidClickEvent as exc:
                    self.invalid += 1
                    log.error(
                        "kept a message that is not a click event in dead_events",
                        extra={
                            "error": str(exc),
                            "partition": tp.partition,
                            "offset": record.offset,
                        },
                    )
                    reason = f"not a click event: {exc}".replace("\x00", "\ufffd")
                    dead.append(DeadEvent(where, record.value, reason[:MAX_ERROR_CHARS]))
        return events, dead

    async def _record_with_retries(self, received: list[Received], depth: int = 0) -> Outcome:
        """Record a batch; transient failures are retried, events that cannot be recorded
        are isolated.

        Only named transient failures (shortlink.db.is_transient: a lost connection, a
        restart or failover, a deadlock, ...) are retried as they are. An error that
        says the statement or the schema is wrong (shortlink.db.is_statement_error: a
        missing migration) would fail every batch alike: it reaches the supervisor.
        Anything else, from PostgreSQL (a value it refuses, an index row too large) or
        from Python (enrichment that raised), comes from some event of the batch: the
        batch is split in two and each half recorded on its own, down to the events
        that cannot be, which go to dead_events with the error. A poison event costs
        about 2 log2(n) more transactions; the rest of its batch is recorded and the
        offsets move on.
        """
        retry = Retry(_RECORD_RETRY, on=is_transient)
        events = [item.event for item in received]
        while True:
            try:
                async with self._pool.acquire() as conn:
                    return await record(
                        conn,
                        events,
                        batch_size=self._config.batch_size,
                        locator=self.locator,
                        ip_modes=await self.ip_modes.fresh(conn),
                    )
            except Exception as exc:
                if is_statement_error(exc):
                    raise
                if not retry.transient(exc):
                    return await self._isolate(received, exc, depth)
                if needs_new_connections(exc):
                    # A restart or a failover: the pool's connections may lead to a server
                    # that is gone, or is now a standby.
                    await self._pool.expire_connections()
                delay = retry.failed()
                log.warning(
                    "recording a batch failed; trying again",
                    extra={"error": repr(exc), "events": len(events), "retry_in": delay},
                )
                await asyncio.sleep(delay)

    async def _isolate(self, received: list[Received], exc: Exception, depth: int) -> Outcome:
        """Record `received` without the events that make it fail with `exc` (bisection)."""
        if len(received) == 1:
            [item] = received
            self.dead += 1
            log.error(
                "kept a click event that cannot be recorded in dead_events",
                # A Python error is a bug to fix: its traceback; PostgreSQL's says it all.
                exc_info=None if isinstance(exc, asyncpg.PostgresError) else exc,
                extra={"error": _error_text(exc), "event_id": item.event.event_id},
            )
            await self._keep_dead([DeadEvent(item.where, item.value, _error_text(exc))])
            return Outcome(received=1)
        if depth == 0:
            self.isolations += 1
            log.warning(
                "a batch cannot be recorded; isolating the events that cause it",
                extra={"error": _error_text(exc), "events": len(received)},
            )
        middle = len(received) // 2
        first = await self._record_with_retries(received[:middle], depth + 1)
        second = await self._record_with_retries(received[middle:], depth + 1)
        return first.plus(second)

    async def _keep_dead(self, dead: list[DeadEvent]) -> None:
        """Store messages that cannot be recorded, with why (retried until it works)."""
        retry = Retry(_RECORD_RETRY, on=is_transient)
        while True:
            try:
                await self._pool.executemany(
                    """
                    INSERT INTO dead_events (topic, partition, "offset", value, error)
                    VALUES ($1, $2, $3, $4, $5)
                    """,
                    [(*item.where, item.value, item.error) for item in dead],
                )
                return
            except Exception as exc:
                if not retry.transient(exc):
                    raise
                await retry.wait()

    def _add(self, outcome: Outcome) -> None:
        self.batches += 1
        totals = self.totals
        totals.received += outcome.received
        totals.recorded += outcome.recorded
        totals.duplicates += outcome.duplicates
        totals.unknown_links += outcome.unknown_links
        totals.bots += outcome.bots
        totals.first_clicks += outcome.first_clicks
        totals.deliveries += outcome.deliveries
