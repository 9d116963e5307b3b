"""The purge: what keeps every table bounded (docs/operations.md lists the bounds).

One function, `purge`, run by the forwarder every PURGE_INTERVAL_SECONDS (a
supervised task; one process at a time, by an advisory lock) and by hand with
`shortlink purge [--as-of ISO-8601] [--dry-run]`. It answers the rows it removed
(or, dry, would remove) per table.

- links: a week's partition is dropped whole once none of its links expires later
  than `grace` before now (LINK_GRACE_DAYS, default 30); with it go the links'
  first_clicks and converted_links rows (ranges of ids: ids carry their period).
- clicks: a month's partition is dropped whole once it ended longer ago than the
  longest click_retention_days of any account; an account that keeps clicks for less
  has its older clicks deleted in batches. conversions (keyed by link id) follow the
  longest retention, measured from the week their link was made; campaign_minutes
  (the per-minute series) the same retention. The per-campaign totals stay.
- delivered deliveries: DELIVERY_RETENTION_DAYS (default 7); dead_events, dead
  deliveries, and pending deliveries and outbox rows of an endpoint disabled that
  long, and keys revoked that long: DEAD_RETENTION_DAYS (default 30); the audit log:
  AUDIT_RETENTION_DAYS (400); keys' rate-limit windows: a day unused; idempotency
  keys: their 24 hours; endpoints made from callback URLs: once unused for longer
  than a link can live, plus the grace, with nothing left to send.

Rows go in batches of `batch` (default 5,000), each its own short transaction;
partitions are detached CONCURRENTLY (no lock that reads or writes wait for) and
finished by the next run when that takes too long, so no statement holds a lock that
readers wait on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from shortlink import partitions
from shortlink.api.idempotency import KEEP_HOURS
from shortlink.config import EnvReader
from shortlink.db import Connection
from shortlink.pool import POOL
from shortlink.supervise import SUPERVISOR

log = logging.getLogger(__name__)

# The advisory lock one purge holds while it runs (arbitrary constant).
_LOCK_KEY = 0x5EED_9A26
_BUSY = (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError)
# The longest a detach waits for the transactions that may still see its partition.
DETACH_TIMEOUT = "60s"


@dataclass(frozen=True)
class Retention:
    """How long what is kept (the settings; docs/configuration.md)."""

    grace: timedelta = timedelta(days=30)  # after the last link of a week expired
    dead: timedelta = timedelta(days=30)
    delivered: timedelta = timedelta(days=7)
    audit: timedelta = timedelta(days=400)
    batch: int = 5_000  # rows per DELETE
    interval: float = 3_600.0  # seconds between two runs of the job

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Retention:
        read = EnvReader(env)
        days = read.integer
        return cls(
            grace=timedelta(
                days=days("LINK_GRACE_DAYS", 30, minimum=0, maximum=partitions.GRACE_DAYS_MAX)
            ),
            dead=timedelta(days=days("DEAD_RETENTION_DAYS", 30, minimum=1, maximum=3650)),
            delivered=timedelta(days=days("DELIVERY_RETENTION_DAYS", 7, minimum=1, maximum=3650)),
            audit=timedelta(days=days("AUDIT_RETENTION_DAYS", 400, minimum=1, maximum=36_500)),
            batch=read.integer("PURGE_BATCH", 5_000, minimum=100, maximum=100_000),
            interval=read.duration(
                "PURGE_INTERVAL_SECONDS", 3_600.0, minimum=1.0, maximum=86_400.0
            ),
        )


@dataclass(frozen=True)
class Policy:
    """One run: the moment it acts as at (now, unless a test or an operator asks what the
    retention would remove at another moment), and whether it only counts."""

    as_of: datetime
    retention: Retention = field(default_factory=Retention)
    dry_run: bool = False


@dataclass
class Report:
    """Rows removed per table, partitions dropped, and the longest single step."""

    rows: Counter[str] = field(default_factory=Counter)
    partitions: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # partitions left for the next run
    longest_step: float = 0.0
    ran: bool = True  # False: another purge was running, this one did nothing

    def as_json(self) -> dict[str, object]:
        return {
            "ran": self.ran,
            "rows": dict(sorted(self.rows.items())),
            "partitions_dropped": self.partitions,
            "partitions_busy": self.busy,
            "longest_step_seconds": round(self.longest_step, 3),
        }


async def purge(conn: Connection, policy: Policy) -> Report:
    """Remove what `policy` no longer keeps; make the partitions needed ahead. Returns the
    counts; a report that did not run (`ran` false) if another purge is running."""
    report = Report()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        log.info("another purge is running")
        report.ran = False
        return report
    try:
        retention = await _longest_retention(conn)
        await _sweep(conn, policy, report)
        await _links(conn, policy, report)
        await _clicks(conn, policy, retention, report)
        await _shorter_retentions(conn, policy, retention, report)
        await _by_link_age(conn, policy, retention, report)
        await _other_tables(conn, policy, retention, report)
        if not policy.dry_run:
            # Those needed now, or at the later moment a test acts as at (the command
            # refuses a moment ahead without --dry-run: it would drop live links).
            await partitions.ensure(conn, max(policy.as_of, datetime.now(UTC)))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return report


async def _longest_retention(conn: Connection) -> timedelta:
    days = await conn.fetchval("SELECT max(click_retention_days) FROM accounts")
    return timedelta(days=days or 400)


async def _timed(report: Report, started: float) -> None:
    report.longest_step = max(report.longest_step, time.perf_counter() - started)


_SUMMARIZE = """
    SELECT brin_summarize_new_values(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
    WHERE i.indrelid = $1::regclass AND am.amname = 'brin'
"""


async def _live(conn: Connection, name: str, cutoff: datetime, *, summarize: bool) -> bool:
    """Whether links partition `name` holds a link expiring after `cutoff`: read off its
    BRIN index on expires_at, not its rows, once its new pages are summarised."""
    if summarize:
        await conn.execute(_SUMMARIZE, name)
    live: bool = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {name} WHERE expires_at > $1)", cutoff
    )
    return live


async def _links(conn: Connection, policy: Policy, report: Report) -> None:
    current = partitions.period_of(policy.as_of)
    cutoff = policy.as_of - policy.retention.grace
    for partition in await partitions.partitions(conn, "links"):
        if not isinstance(partition.high, int) or partition.high >= current:
            continue  # last week's (an API clock behind ours), this week's and those ahead stay
        started = time.perf_counter()
        live = await _live(conn, partition.name, cutoff, summarize=not policy.dry_run)
        await _timed(report, started)
        if not live:
            await _drop(conn, policy, report, "links", partition.name)


async def _drop(conn: Connection, policy: Policy, report: Report, table: str, name: str) -> None:
    """Detach one partition without blocking its readers, then settle it (_settle).

    DETACH ... CONCURRENTLY takes a SHARE UPDATE EXCLUSIVE lock on the parent, which
    reads and writes do not wait for, and waits for the transactions that may still see
    the partition; DETACH_TIMEOUT bounds that wait. A detach cut short stays pending and
    is finished by the next run (_sweep)."""
    if policy.dry_run:
        started = time.perf_counter()
        report.rows[table] += await conn.fetchval(f"SELECT count(*) FROM {name}")
        report.partitions.append(name)
        await _timed(report, started)
        if table == "links":
            await _link_rows_elsewhere(conn, policy, report, name)
        return
    started = time.perf_counter()
    try:
        await conn.execute(f"SET statement_timeout = '{DETACH_TIMEOUT}'")
        await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {name} CONCURRENTLY")
    except (*_BUSY, asyncpg.ObjectNotInPrerequisiteStateError):
        # Busy, or another detach of the table is pending (one at a time): the next run.
        log.warning(
            "partition detach not finished; the next run goes on", extra={"partition": name}
        )
        report.busy.append(name)
        return
    finally:
        await conn.execute("RESET statement_timeout")
        await _timed(report, started)
    await _settle(conn, policy, report, table, name)


async def _settle(conn: Connection, policy: Policy, report: Report, table: str, name: str) -> None:
    """A detached partition: attached again if a link in it was made live meanwhile (a
    PATCH between the check and the detach); else its links' rows elsewhere deleted, its
    rows counted, and the table dropped."""
    if table == "links":
        period = partitions.link_partition_period(name)
        cutoff = policy.as_of - policy.retention.grace
        if await _live(conn, name, cutoff, summarize=True):
            await conn.execute(
                f"ALTER TABLE links ATTACH PARTITION {name} FOR VALUES FROM ({period}) TO "
                f"({period + 1})"
            )
            log.warning(
                "a link of a detached week was live: attached again", extra={"partition": name}
            )
            return
        await _link_rows_elsewhere(conn, policy, report, name)
    started = time.perf_counter()
    rows: int = await conn.fetchval(f"SELECT count(*) FROM {name}")
    await conn.execute(f"DROP TABLE {name}")
    await _timed(report, started)
    report.rows[table] += rows
    report.partitions.append(name)
    log.info("partition dropped", extra={"partition": name, "rows": rows})


async def _link_rows_elsewhere(conn: Connection, policy: Policy, report: Report, name: str) -> None:
    """The first_clicks and converted_links rows of links partition `name`'s links (ranges
    of ids: ids carry their period)."""
    period = partitions.link_partition_period(name)
    low, high = partitions.first_id(period), partitions.first_id(period + 1)
    for side in ("first_clicks", "converted_links"):
        report.rows[side] += await _batched(
            conn,
            policy,
            report,
            side,
            "link_id >= $1 AND link_id < $2",
            low,
            high,
            key="link_id",
        )


async def _sweep(conn: Connection, policy: Policy, report: Report) -> None:
    """Finish what an earlier run left: detaches cut short, tables detached but not dropped."""
    if policy.dry_run:
        return
    for table in ("links", "clicks"):
        pending, orphans = await partitions.detached(conn, table)
        for name in pending:
            try:
                await conn.execute(f"SET statement_timeout = '{DETACH_TIMEOUT}'")
                await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {name} FINALIZE")
            except _BUSY:
                report.busy.append(name)
                continue
            finally:
                await conn.execute("RESET statement_timeout")
            await _settle(conn, policy, report, table, name)
        for name in orphans:
            await _settle(conn, policy, report, table, name)


async def _clicks(conn: Connection, policy: Policy, retention: timedelta, report: Report) -> None:
    cutoff = policy.as_of - retention
    for partition in await partitions.partitions(conn, "clicks"):
        if isinstance(partition.high, datetime) and partition.high <= cutoff:
            await _drop(conn, policy, report, "clicks", partition.name)


async def _shorter_retentions(
    conn: Connection, policy: Policy, retention: timedelta, report: Report
) -> None:
    """The clicks of accounts that keep them for less than the longest retention."""
    accounts = await conn.fetch(
        "SELECT id, click_retention_days FROM accounts WHERE click_retention_days < $1",
        retention.days,
    )
    for account in accounts:
        cutoff = policy.as_of - timedelta(days=account["click_retention_days"])
        report.rows["clicks"] += await _batched(
            conn,
            policy,
            report,
            "clicks",
            "account_id = $1 AND clicked_at < $2",
            account["id"],
            cutoff,
            key="(event_id, clicked_at)",
        )


async def _by_link_age(
    conn: Connection, policy: Policy, retention: timedelta, report: Report
) -> None:
    """conversions by the week their link was made, kept as long as the longest click
    retention; those of the links made before partitioning once both the legacy links
    and the legacy clicks are gone."""
    oldest = partitions.period_of(policy.as_of - retention)
    report.rows["conversions"] += await _batched(
        conn,
        policy,
        report,
        "conversions",
        "link_id >= $1 AND link_id < $2",
        partitions.first_id(1),
        partitions.first_id(oldest),
        key="(link_id, id)",
    )
    names = {p.name for p in await partitions.partitions(conn, "clicks")}
    names |= {p.name for p in await partitions.partitions(conn, "links")}
    if not names & {"clicks_legacy", "links_legacy"}:
        # The links and clicks of before partitioning are gone: so go their conversions.
        report.rows["conversions"] += await _batched(
            conn,
            policy,
            report,
            "conversions",
            "link_id < $1",
            partitions.first_id(1),
            key="(link_id, id)",
        )
    report.rows["campaign_minutes"] += await _batched(
        conn,
        policy,
        report,
        "campaign_minutes",
        "minute < $1",
        policy.as_of - retention,
        key="(account_id, campaign, minute)",
    )


async def _other_tables(
    conn: Connection, policy: Policy, retention: timedelta, report: Report
) -> None:
    dead = policy.as_of - policy.retention.dead
    report.rows["dead_events"] += await _batched(
        conn, policy, report, "dead_events", "received_at < $1", dead
    )
    report.rows["deliveries"] += await _batched(
        conn,
        policy,
        report,
        "deliveries",
        "status = 'delivered' AND delivered_at < $1",
        policy.as_of - policy.retention.delivered,
        key="request_identifier",
    )
    report.rows["deliveries"] += await _batched(
        conn,
        policy,
        report,
        "deliveries",
        "status = 'dead' AND created_at < $1",
        dead,
        key="request_identifier",
    )
    # Pending deliveries and outbox rows of an endpoint that has stayed disabled: nobody
    # will receive them.
    disabled = "endpoint_id IN (SELECT id FROM endpoints WHERE NOT enabled AND updated_at < $1)"
    report.rows["deliveries"] += await _batched(
        conn,
        policy,
        report,
        "deliveries",
        f"status = 'pending' AND {disabled}",
        dead,
        key="request_identifier",
    )
    report.rows["outbox"] += await _batched(conn, policy, report, "outbox", disabled, dead)
    report.rows["idempotency_keys"] += await _batched(
        conn,
        policy,
        report,
        "idempotency_keys",
        "created_at < $1",
        policy.as_of - timedelta(hours=KEEP_HOURS),
        key="(account_id, key)",
    )
    report.rows["audit_log"] += await _batched(
        conn, policy, report, "audit_log", "at < $1", policy.as_of - policy.retention.audit
    )
    # A key's rate-limit window is one row, rewritten each minute it is used: only the
    # rows of keys unused for a day go (revoked ones included).
    report.rows["api_key_windows"] += await _batched(
        conn,
        policy,
        report,
        "api_key_windows",
        "window_start < $1",
        policy.as_of - timedelta(days=1),
        key="key_id",
    )
    report.rows["api_keys"] += await _batched(
        conn, policy, report, "api_keys", "revoked_at < $1", dead
    )
    # A callback endpoint unused for longer than any link lives has no live link left.
    unused = policy.as_of - timedelta(days=partitions.MAX_LIFETIME_DAYS) - policy.retention.grace
    report.rows["endpoints"] += await _batched(
        conn,
        policy,
        report,
        "endpoints",
        """callback_account_id IS NOT NULL AND used_at < $1
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = endpoints.id)
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.endpoint_id = endpoints.id)""",
        unused,
        # A request naming the URL meanwhile sets used_at: that endpoint stays.
        recheck="used_at < $1",
    )


async def _batched(
    conn: Connection,
    policy: Policy,
    report: Report,
    table: str,
    where: str,
    *args: object,
    key: str = "id",
    recheck: str = "true",
) -> int:
    """Delete the rows of `table` matching `where`, a batch at a time, each batch its own
    transaction; (dry) count them. `key` identifies a row (unique in the table); `recheck`
    is checked again on the row as the DELETE finds it (a row changed meanwhile by a
    concurrent transaction is re-read: READ COMMITTED's recheck of the outer WHERE)."""
    if policy.dry_run:
        started = time.perf_counter()
        count: int = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args)
        await _timed(report, started)
        return count
    total = 0
    limit = len(args) + 1
    while True:
        started = time.perf_counter()
        status = await conn.execute(
            f"""
            DELETE FROM {table} WHERE {key} IN (
                SELECT {key.strip("()")} FROM {table} WHERE {where} LIMIT ${limit}
            ) AND {recheck}
            """,
            *args,
            policy.retention.batch,
        )
        await _timed(report, started)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < policy.retention.batch:
            return total


class PurgeJob:
    """The purge every `retention.interval` seconds, in a supervised task of the forwarder.

    A busy partition or a failed batch is tried again at the next run; anything else
    reaches the supervisor (counted, restarted with backoff, and the process marked
    unhealthy if it keeps failing: partitions that cannot be made ahead stop recording
    within weeks, so that must not go unseen)."""

    def __init__(self, pool: asyncpg.Pool, retention: Retention) -> None:
        self._pool = pool
        self._retention = retention
        self.runs = 0
        self.removed: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            async with self._pool.acquire() as conn:
                # Its statement timeouts and advisory locks are its own: the forwarder's
                # pool hands connections back as they are (shortlink.pool, stateless).
                try:
                    report = await purge(conn, Policy(datetime.now(UTC), self._retention))
                except BaseException:
                    conn.terminate()  # whatever the session holds goes with it
                    raise
                await conn.reset()
            self.runs += 1
            self.removed.update(report.rows)
            if report.partitions or any(report.rows.values()):
                log.info("purged", extra=report.as_json())
            await asyncio.sleep(self._retention.interval)


def purge_context(
    retention: Retention,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx: the purge job (after the pool and the supervisor)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        job = PurgeJob(app[POOL], retention)
        app[PURGE] = job
        task = app[SUPERVISOR].spawn("purge", job.run)
        yield
        await task.stop()

    return context


PURGE = web.AppKey("purge", PurgeJob)
