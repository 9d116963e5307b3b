"""The purge: whole partitions dropped once expired, batches elsewhere, counts reported."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shortlink import accounts, erasures, partitions
from shortlink.config import ServiceConfig
from shortlink.db import Connection
from shortlink.links import NewLink, create_links
from shortlink.pool import open_pool
from shortlink.purge import Policy, PurgeJob, Report, Retention, purge
from tests.infra import shortlink, wait_until


@pytest.fixture
async def conn(own_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database of the test's own."""
    connection = await asyncpg.connect(own_database_url)
    yield connection
    await connection.close()


async def _account(conn: asyncpg.Connection, retention_days: int | None = None) -> int:
    account = await accounts.create_account(conn, "purged")
    if retention_days is not None:
        await conn.execute(
            "UPDATE accounts SET click_retention_days = $2 WHERE id = $1",
            account.account_id,
            retention_days,
        )
    return account.account_id


async def _click(conn: asyncpg.Connection, link_id: int, account_id: int, at: datetime) -> None:
    await conn.execute(
        """
        INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method)
        VALUES ($1, $2, $3, $4, 'GET')
        """,
        uuid.uuid4(),
        link_id,
        account_id,
        at,
    )


async def test_nothing_live_is_removed(conn: asyncpg.Connection) -> None:
    """Purging now removes no link, click or conversion that is still kept."""
    account = await _account(conn)
    made = await create_links(conn, account, [NewLink(f"https://e.example/{i}") for i in range(5)])
    await _click(conn, made[0].id, account, datetime.now(UTC))
    report = await purge(conn, Policy(datetime.now(UTC)))
    assert report.rows["links"] == report.rows["clicks"] == 0
    assert report.partitions in ([], ["links_legacy"])  # empty, so it goes
    assert await conn.fetchval("SELECT count(*) FROM links") == 5
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 1


async def test_expired_weeks_are_dropped_whole_with_their_links_rows(
    conn: asyncpg.Connection,
) -> None:
    """Once the grace after a week's last expiry has passed, its partition goes, with the
    first clicks and conversions marks of its links; a dry run counts the same first."""
    account = await _account(conn)
    made = await create_links(conn, account, [NewLink(f"https://e.example/{i}") for i in range(7)])
    await conn.execute(
        "INSERT INTO first_clicks (link_id, clicked_at) SELECT unnest($1::int8[]), now()",
        [link.id for link in made[:3]],
    )
    await conn.execute(
        "INSERT INTO converted_links (link_id, converted_at) VALUES ($1, now())", made[0].id
    )
    week = partitions.link_partition_name(partitions.period_of_id(made[0].id))
    too_soon = made[0].expires_at + timedelta(days=29)
    assert week not in (await purge(conn, Policy(too_soon))).partitions

    after = made[0].expires_at + timedelta(days=31) + partitions.WEEK
    dry = await purge(conn, Policy(after, dry_run=True))
    assert week in dry.partitions
    assert (dry.rows["links"], dry.rows["first_clicks"], dry.rows["converted_links"]) == (7, 3, 1)
    assert await conn.fetchval("SELECT count(*) FROM links") == 7

    report = await purge(conn, Policy(after))
    assert week in report.partitions
    assert (report.rows["links"], report.rows["first_clicks"]) == (7, 3)
    assert report.rows["converted_links"] == 1
    assert await conn.fetchval("SELECT count(*) FROM links") == 0
    assert await conn.fetchval("SELECT count(*) FROM first_clicks") == 0
    assert await conn.fetchval("SELECT to_regclass($1)", week) is None
    # The partitions ahead of that moment were made.
    current = partitions.period_of(after)
    names = {p.name for p in await partitions.partitions(conn, "links")}
    assert partitions.link_partition_name(current + partitions.LINK_WEEKS_AHEAD) in names


async def test_a_link_still_alive_keeps_its_week(conn: asyncpg.Connection) -> None:
    """One link with a long lifetime keeps its whole week's partition until it expires."""
    account = await _account(conn)
    short, long = await create_links(
        conn,
        account,
        [
            NewLink("https://e.example/short"),
            NewLink("https://e.example/long", lifetime=timedelta(days=200)),
        ],
    )
    week = partitions.link_partition_name(partitions.period_of_id(short.id))
    between = short.expires_at + timedelta(days=60)
    assert week not in (await purge(conn, Policy(between))).partitions
    assert await conn.fetchval("SELECT count(*) FROM links") == 2
    later = long.expires_at + timedelta(days=31)
    assert week in (await purge(conn, Policy(later))).partitions


async def test_clicks_follow_the_longest_retention_and_shorter_ones_go_in_batches(
    conn: asyncpg.Connection,
) -> None:
    """An account keeping clicks 30 days loses older ones in batches; the others stay
    until their month's partition ends longer ago than the longest retention."""
    keeper, brief = await _account(conn), await _account(conn, retention_days=30)
    [kept] = await create_links(conn, keeper, [NewLink("https://e.example/k")])
    [gone] = await create_links(conn, brief, [NewLink("https://e.example/b")])
    now = datetime.now(UTC)
    for i in range(250):
        await _click(conn, gone.id, brief, now - timedelta(minutes=i))
    await _click(conn, kept.id, keeper, now)
    retention = Retention(batch=100)
    report = await purge(conn, Policy(now + timedelta(days=40), retention))
    assert report.rows["clicks"] == 250
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 1

    much_later = now + timedelta(days=400 + 62)
    report = await purge(conn, Policy(much_later, retention))
    assert report.rows["clicks"] == 1
    assert "clicks_legacy" in report.partitions
    assert await conn.fetchval("SELECT count(*) FROM clicks") == 0


async def test_other_tables_are_bounded(conn: asyncpg.Connection) -> None:
    """Old dead events, deliveries, outbox rows of disabled endpoints, idempotency keys,
    audit entries, revoked keys and their rate-limit windows, and unused callback endpoints
    go; recent ones stay."""
    account = await _account(conn)
    old = datetime.now(UTC) - timedelta(days=500)
    await conn.execute(
        """
        INSERT INTO dead_events (topic, partition, "offset", error, received_at)
        VALUES ('clicks', 0, 1, 'bad', $1), ('clicks', 0, 2, 'bad', now())
        """,
        old,
    )
    endpoint = await conn.fetchval(
        """
        INSERT INTO endpoints (account_id, url, format, mode, enabled, updated_at)
        VALUES ($1, 'https://hooks.example/x', 'json', 'every', false, $2) RETURNING id
        """,
        account,
        old,
    )
    await conn.executemany(
        """
        INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                oldest_click_at, status, created_at, delivered_at)
        VALUES ($1, $2, 'json', '', 1, now(), $3, $4, $5)
        """,
        [
            (uuid.uuid4(), endpoint, "delivered", old, old),
            (uuid.uuid4(), endpoint, "dead", old, None),
            (uuid.uuid4(), endpoint, "pending", old, None),
            (uuid.uuid4(), endpoint, "delivered", datetime.now(UTC), datetime.now(UTC)),
        ],
    )
    await conn.execute(
        "INSERT INTO outbox (endpoint_id, event_id, detail, format) VALUES ($1, $2, '', 'json')",
        endpoint,
        uuid.uuid4(),
    )
    await conn.execute(
        """
        INSERT INTO idempotency_keys (account_id, key, request_hash, status, response, created_at)
        VALUES ($1, 'old', '', 201, '', $2), ($1, 'new', '', 201, '', now())
        """,
        account,
        old,
    )
    await conn.execute(
        """
        INSERT INTO endpoints (callback_account_id, url, format, mode, used_at)
        VALUES ($1, 'https://cb.example/old', 'clickthru', 'first', $2),
               ($1, 'https://cb.example/new', 'clickthru', 'first', now())
        """,
        account,
        old,
    )
    await conn.execute(
        """
        INSERT INTO audit_log (account_id, action, summary, at)
        VALUES ($1, 'account.disabled', '{}', $2), ($1, 'account.disabled', '{}', now())
        """,
        account,
        old,
    )
    revoked = await conn.fetchval(
        """
        INSERT INTO api_keys (account_id, key_hash, key_prefix, revoked_at)
        VALUES ($1, $2, 'sl_old', $3) RETURNING id
        """,
        account,
        bytes(32),
        old,
    )
    await conn.execute(
        "INSERT INTO api_key_windows (key_id, window_start, used) VALUES ($1, $2, 3)",
        revoked,
        old,
    )
    report = await purge(conn, Policy(datetime.now(UTC)))
    assert report.rows["audit_log"] == 1
    assert report.rows["api_keys"] == 1
    assert report.rows["api_key_windows"] == 1
    assert report.rows["dead_events"] == 1
    assert report.rows["deliveries"] == 3
    assert report.rows["outbox"] == 1
    assert report.rows["idempotency_keys"] == 1
    assert report.rows["endpoints"] == 1
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1
    assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 1
    assert await conn.fetchval(
        "SELECT array_agg(url) FROM endpoints WHERE callback_account_id IS NOT NULL"
    ) == ["https://cb.example/new"]


async def test_one_purge_at_a_time(conn: asyncpg.Connection, own_database_url: str) -> None:
    """A purge that finds another running does nothing and says so by an empty report."""
    await conn.execute("SELECT pg_advisory_lock(x'5EED9A26'::int8)")
    other = await asyncpg.connect(own_database_url)
    try:
        report = await purge(other, Policy(datetime.now(UTC) + timedelta(days=900)))
        assert report.partitions == []
        assert not report.rows
    finally:
        await other.close()
        await conn.execute("SELECT pg_advisory_unlock(x'5EED9A26'::int8)")


async def test_the_job_purges_on_its_own(own_database_url: str) -> None:
    """The forwarder's purge job runs at once and then every interval."""
    pool = await asyncpg.create_pool(own_database_url, min_size=1, max_size=2)
    job = PurgeJob(pool, Retention(interval=0.05))
    task = asyncio.create_task(job.run())
    try:
        await wait_until(lambda: job.runs >= 2, within=30, what="two purge runs")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pool.close()


def _purging_with(monkeypatch: pytest.MonkeyPatch, work: Any) -> list[int]:
    """Make the job's purge `work`; the backend pids of the connections it is given."""
    backends: list[int] = []

    async def fake(conn: Connection, policy: Policy) -> Report:
        backends.append(await conn.fetchval("SELECT pg_backend_pid()"))
        return await work(conn)

    monkeypatch.setattr("shortlink.purge.purge", fake)
    return backends


def _forwarders_pool(database_url: str) -> contextlib.AbstractAsyncContextManager[asyncpg.Pool]:
    """A pool as the forwarder's: here one connection, no reset on release."""
    config = ServiceConfig.from_env({"DATABASE_URL": database_url, "DATABASE_POOL_SIZE": "1"})
    return open_pool(config, stateless=True)


async def test_the_job_gives_its_connection_back_without_its_session_state(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge's settings and advisory locks do not outlive it on a pool that keeps sessions."""
    seen: list[tuple[str, int]] = []

    async def leaves_state(conn: Connection) -> Report:
        seen.append(
            (
                await conn.fetchval("SELECT current_setting('statement_timeout')"),
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                ),
            )
        )
        await conn.execute("SET statement_timeout = '7s'")
        await conn.execute("SELECT pg_advisory_lock(77)")
        return Report()

    backends = _purging_with(monkeypatch, leaves_state)
    async with _forwarders_pool(database_url) as pool:
        task = asyncio.create_task(PurgeJob(pool, Retention(interval=0.01)).run())
        try:
            await wait_until(lambda: len(backends) >= 2, within=30, what="two purge runs")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert backends[0] == backends[1]  # the same connection, handed back and taken again
    assert seen[:2] == [("0", 0), ("0", 0)]


async def test_a_failed_purge_closes_its_connection(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge that fails mid-way leaves no session state behind: its connection is closed."""

    async def fails(conn: Connection) -> Report:
        await conn.execute("SET statement_timeout = '7s'")
        raise RuntimeError("purge failed")

    backends = _purging_with(monkeypatch, fails)
    async with _forwarders_pool(database_url) as pool:
        with pytest.raises(RuntimeError):
            await PurgeJob(pool, Retention(interval=0.01)).run()
        async with pool.acquire() as conn:
            after = await conn.fetchval("SELECT pg_backend_pid()")
            setting = await conn.fetchval("SELECT current_setting('statement_timeout')")
    assert after != backends[0]
    assert setting == "0"


def test_the_command_prints_counts_as_json(own_database_url: str) -> None:
    """`shortlink purge --as-of ... --dry-run` prints what it would remove, as JSON."""
    env = {"DATABASE_URL": own_database_url}
    done = shortlink(env, "purge", "--dry-run", "--as-of", "2031-01-01T00:00Z")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["as_of"] == "2031-01-01T00:00:00Z"
    assert printed["dry_run"] is True
    assert "links_legacy" in printed["partitions_dropped"]
    bad = shortlink(env, "purge", "--as-of", "next tuesday")
    assert bad.returncode == 2
    assert "ISO 8601" in bad.stderr


async def test_a_week_detached_with_a_live_link_is_attached_again(
    conn: asyncpg.Connection,
) -> None:
    """A week found detached (a stop between detach and drop, or a PATCH that revived a link
    meanwhile) is attached again when it holds a live link, and dropped when it does not."""
    account = await _account(conn)
    [link] = await create_links(conn, account, [NewLink("https://e.example/revived")])
    period = partitions.period_of_id(link.id)
    week = partitions.link_partition_name(period)
    await conn.execute(f"ALTER TABLE links DETACH PARTITION {week}")
    report = await purge(conn, Policy(datetime.now(UTC)))
    assert week not in report.partitions
    assert await conn.fetchval("SELECT count(*) FROM links WHERE id = $1", link.id) == 1

    later = link.expires_at + timedelta(days=31) + partitions.WEEK
    await conn.execute(f"ALTER TABLE links DETACH PARTITION {week}")
    await conn.execute("INSERT INTO first_clicks (link_id, clicked_at) VALUES ($1, now())", link.id)
    report = await purge(conn, Policy(later))
    assert week in report.partitions
    assert report.rows["first_clicks"] == 1
    assert await conn.fetchval("SELECT to_regclass($1)", week) is None


async def test_a_detach_cut_short_is_finished_by_the_next_run(
    conn: asyncpg.Connection, own_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detach that waited too long for an open transaction is left pending, the others
    reported busy, and the next run finishes it and drops them."""
    account = await _account(conn)
    [link] = await create_links(conn, account, [NewLink("https://e.example/slow")])
    week = partitions.link_partition_name(partitions.period_of_id(link.id))
    later = link.expires_at + timedelta(days=31) + partitions.WEEK
    reader = await asyncpg.connect(own_database_url)
    try:
        # An open transaction that has seen links: the detach must wait for it.
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await reader.fetchval("SELECT count(*) FROM links")
        monkeypatch.setattr("shortlink.purge.DETACH_TIMEOUT", "1s")
        report = await purge(conn, Policy(later))
        assert week in report.busy
        # The first detach waits, then is left pending; a table has one pending at a time.
        pending, _ = await partitions.detached(conn, "links")
        assert len(pending) == 1
    finally:
        await reader.execute("ROLLBACK")
        await reader.close()
    report = await purge(conn, Policy(later))
    assert week in report.partitions
    assert pending[0] in report.partitions
    assert await conn.fetchval("SELECT to_regclass($1)", week) is None


async def test_partitions_made_by_concurrent_runs(own_database_url: str) -> None:
    """Several runs making the same partitions at once take turns; none fails."""
    conns = [await asyncpg.connect(own_database_url) for _ in range(3)]
    try:
        later = datetime.now(UTC) + 8 * partitions.WEEK
        made = await asyncio.gather(*(partitions.ensure(c, later) for c in conns))
        names = [name for run in made for name in run]
        assert len(names) == len(set(names))
        assert partitions.link_partition_name(partitions.period_of(later)) in names
    finally:
        for c in conns:
            await c.close()


def test_the_command_refuses_to_act_as_at_a_moment_ahead(own_database_url: str) -> None:
    """A moment ahead would drop live links: only with --dry-run."""
    done = shortlink({"DATABASE_URL": own_database_url}, "purge", "--as-of", "2031-01-01")
    assert done.returncode == 2
    assert "--dry-run" in done.stderr


async def test_an_erasure_finds_the_clicks_of_links_already_dropped(
    conn: asyncpg.Connection,
) -> None:
    """Clicks outlive their links: once a week of links is dropped, erasing the number still
    nulls its clicks, found by the number they carry."""
    account = await _account(conn)
    phone = "447700900123"
    [link] = await create_links(
        conn, account, [NewLink("https://e.example/g", phone, None, "spring")]
    )
    await conn.execute(
        """
        INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method, user_agent,
                            client_ip, phone_number, client_identifier)
        VALUES ($1, $2, $3, now(), 'GET', 'UA', '203.0.113.9', $4, 'spring')
        """,
        uuid.uuid4(),
        link.id,
        account,
        phone,
    )
    later = link.expires_at + timedelta(days=31) + partitions.WEEK
    report = await purge(conn, Policy(later))
    assert report.rows["links"] == 1
    erased = await erasures.erase(conn, account, phone)
    assert erased.clicks == 1
    row = await conn.fetchrow("SELECT phone_number, client_ip, user_agent FROM clicks")
    assert tuple(row) == (None, None, None)
