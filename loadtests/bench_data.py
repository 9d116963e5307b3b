"""`make bench-data`: storage at campaign scale, and what the purge does to it.

Fills a database of its own (on the embedded PostgreSQL, or the server of
DATABASE_URL) with links and clicks spread over `--days` simulated days (150;
20,000,000 links and as many clicks by default, `--links` and `--clicks`), the
way the services write them: each day's links in their week's partition with
their week's ids and token tags, 90-day lifetimes, each click a few days after
its link in its month's partition. Then it reports:

1. bytes on disk per link and per click (tables and indexes, all partitions);
2. cold token lookups (the redirect server's query, tokens drawn from every week,
   with PostgreSQL's shared buffers and the OS cache of its files emptied first):
   p50 / p99 milliseconds, measured once the first `--small` links (1,000,000) are
   loaded and again with all of them; the growth must stay under 1.5x;
3. the campaign statistics and a 100,000-recipient create_links (what
   POST /v1/links runs), before and after the purge;
4. the purge as of the last simulated day: its duration, the rows and partitions
   it removed, and its longest single step (the DETACH of a partition holds the
   only lock readers would wait on);
5. bytes on disk after the purge, and the storage formula's constants
   (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from shortlink import accounts, partitions, schema, tokens
from shortlink.campaigns import stats
from shortlink.dev import embedded
from shortlink.links import NewLink, create_links, fetch_rows
from shortlink.purge import Policy, purge

from .databases import create_database, drop_database
from .results import write_section

CAMPAIGNS_PER_DAY = 4
LOOKUPS = 2_000
# A token of the week: its tag, then six random base62 characters (from the database's
# random(): good enough for data that only has to be shaped like the real thing).
_TAGGED_RANDOM = """
    $1 || (SELECT string_agg(substr($2, 1 + floor(random() * 62)::int, 1), '')
           FROM generate_series(1, 6) WHERE g IS NOT NULL)
"""


async def load_links(conn: asyncpg.Connection, account: int, day: datetime, count: int) -> None:
    period = partitions.period_of(day)
    await conn.execute(
        f"""
        INSERT INTO links (id, period, token, account_id, target_url, phone_number, client_ref,
                           client_identifier, created_at, expires_at)
        SELECT $3::int8 | nextval('links_sequence'), $4, {_TAGGED_RANDOM}, $5,
               'https://shop.example.com/offer?c=' || ($7 + g % $8),
               '4477' || lpad((g % 100000000)::text, 8, '0'), 'msg-' || g,
               'campaign-' || ($7 + g % $8), t, t + interval '90 days'
        FROM generate_series(1, $6::int) AS g,
             LATERAL (SELECT $9::timestamptz + (g * 86400.0 / $6) * interval '1 second') AS c(t)
        ON CONFLICT (token, period) DO NOTHING
        """,
        partitions.tag(period),
        tokens.ALPHABET,
        partitions.first_id(period),
        period,
        account,
        count,
        (day - datetime(2000, 1, 1, tzinfo=UTC)).days * CAMPAIGNS_PER_DAY,
        CAMPAIGNS_PER_DAY,
        day,
    )


async def load_clicks(conn: asyncpg.Connection, day: datetime, share: float) -> None:
    """About `share` clicks per link made on `day`, each within 3 days of its link."""
    period = partitions.period_of(day)
    await conn.execute(
        """
        INSERT INTO clicks (event_id, link_id, account_id, clicked_at, method, user_agent,
                            client_ip, browser, os, device_type, is_bot, target_url,
                            phone_number, client_ref, client_identifier, shortened_at, country)
        SELECT gen_random_uuid(), l.id, l.account_id,
               least(l.created_at + random() * interval '3 days', $4), 'GET',
               'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148',
               '203.0.113.7', 'Mobile Safari', 'iOS', 'mobile', false, l.target_url,
               l.phone_number, l.client_ref, l.client_identifier, l.created_at, 'GB'
        FROM links l
        WHERE l.period = $1 AND l.created_at >= $2 AND l.created_at < $2 + interval '1 day'
          AND random() < $3
        """,
        period,
        day,
        share,
        day + timedelta(days=3),
    )


async def sizes(conn: asyncpg.Connection) -> dict[str, int]:
    """Bytes on disk (heap, TOAST and indexes of every partition) and rows, per table."""
    out = {}
    for table in ("links", "clicks"):
        out[f"{table}_bytes"] = await conn.fetchval(
            """
            SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)::int8
            FROM pg_inherits i WHERE i.inhparent = $1::regclass
            """,
            table,
        )
        out[f"{table}_rows"] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return out


async def evict_buffers(conn: asyncpg.Connection) -> str:
    """Empty PostgreSQL's shared buffers and the operating system's cache of the database's
    files, so both lookup measurements start equally cold: every page read from disk.

    Reading the clicks first (what this did before) left the 1M-link lookups warm: a
    large sequential scan goes through a small ring of buffers and evicts almost
    nothing, and the few pages of 1M links stay in the OS cache while most of 20M do
    not, so the comparison measured the caches rather than the lookup. PostgreSQL 18
    (the embedded server) empties its buffers on request (pg_buffercache 1.6); the
    files are dropped from the OS cache with posix_fadvise when they are on this
    machine. Answers how, for the report."""
    await conn.execute("CHECKPOINT")  # clean buffers and pages: both can be dropped
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        await conn.fetchval("SELECT count(*) FROM pg_buffercache_evict_all()")
    except asyncpg.PostgresError:
        await conn.fetchval("SELECT count(*) FROM clicks WHERE user_agent IS NULL")
        return "the clicks scanned first (this server cannot empty its buffers)"
    directory = Path(await conn.fetchval("SHOW data_directory")) / await conn.fetchval(
        "SELECT 'base/' || oid FROM pg_database WHERE datname = current_database()"
    )
    if not directory.is_dir():
        return "PostgreSQL's buffers emptied first (its files are not on this machine)"
    await asyncio.to_thread(_drop_cached, directory)
    return "PostgreSQL's buffers and the OS cache of its files emptied first"


def _drop_cached(directory: Path) -> None:
    """Ask the kernel to drop its cached pages of every file in `directory`."""
    for path in directory.iterdir():
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


async def lookups(pool: asyncpg.Pool, conn: asyncpg.Connection) -> tuple[float, float, str]:
    """p50 and p99 milliseconds of the redirect server's lookup of one token, tokens drawn
    at random from the links, starting with nothing of the database cached."""
    sample = [
        row["token"]
        for row in await conn.fetch("SELECT token FROM links ORDER BY random() LIMIT $1", LOOKUPS)
    ]
    random.shuffle(sample)
    how = await evict_buffers(conn)
    took = []
    for token in sample:
        started = time.perf_counter()
        rows = await fetch_rows(pool, [token])
        took.append((time.perf_counter() - started) * 1000)
        assert rows, token
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.99) - 1], how


async def campaign_and_create(conn: asyncpg.Connection, account: int) -> tuple[float, float]:
    """Milliseconds of a campaign's statistics, and seconds of a 100,000-link create_links."""
    name = await conn.fetchval(
        "SELECT client_identifier FROM links WHERE account_id = $1 ORDER BY id DESC LIMIT 1",
        account,
    )
    started = time.perf_counter()
    await stats.campaign(conn, account, name)
    statistics_ms = (time.perf_counter() - started) * 1000
    specs = [
        NewLink(f"https://shop.example.com/new?r={i}", f"4479{i:08d}", f"new-{i}", "bench-new")
        for i in range(100_000)
    ]
    started = time.perf_counter()
    await create_links(conn, account, specs)
    return statistics_ms, time.perf_counter() - started


async def run(database_url: str, args: argparse.Namespace) -> list[str]:
    conn = await asyncpg.connect(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        await schema.migrate(conn)
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        # A new database: the legacy partitions are empty; weeks and months from day 0.
        for table in ("links", "clicks"):
            await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_legacy")
            await conn.execute(f"DROP TABLE {table}_legacy")
        await partitions.ensure(conn, end, since=start)
        account = (await accounts.create_account(conn, "bench-data")).account_id
        per_day = args.links // args.days
        share = args.clicks / args.links
        lines = []
        loaded_at = time.perf_counter()
        small: tuple[float, float, str] | None = None
        for day in range(args.days):
            moment = start + timedelta(days=day)
            await load_links(conn, account, moment, per_day)
            await load_clicks(conn, moment, share)
            if small is None and (day + 1) * per_day >= args.small:
                await conn.execute("ANALYZE links")
                small = await lookups(pool, conn)
            if day % 10 == 9:
                print(f"day {day + 1}: {time.perf_counter() - loaded_at:.0f} s", flush=True)
        await conn.execute("ANALYZE links")
        await conn.execute("ANALYZE clicks")
        load_seconds = time.perf_counter() - loaded_at
        full = await lookups(pool, conn)
        stats_before, create_before = await campaign_and_create(conn, account)
        before = await sizes(conn)
        started = time.perf_counter()
        report = await purge(conn, Policy(end))
        purge_seconds = time.perf_counter() - started
        after = await sizes(conn)
        stats_after, create_after = await campaign_and_create(conn, account)
        per_link = before["links_bytes"] / max(1, before["links_rows"])
        per_click = before["clicks_bytes"] / max(1, before["clicks_rows"])
        assert small is not None
        lines += [
            f"- loaded {before['links_rows']:,} links and {before['clicks_rows']:,} clicks over "
            f"{args.days} days in {load_seconds:.0f} s",
            f"- on disk: links {before['links_bytes'] / 2**30:.2f} GiB = **{per_link:.0f} bytes "
            f"per link**; clicks {before['clicks_bytes'] / 2**30:.2f} GiB = **{per_click:.0f} "
            "bytes per click** (tables, TOAST and indexes)",
            f"- cold token lookup with {args.small:,} links: p50 {small[0]:.3f} ms, p99 "
            f"{small[1]:.3f} ms; with {before['links_rows']:,}: p50 {full[0]:.3f} ms, p99 "
            f"{full[1]:.3f} ms (**p99 x{full[1] / small[1]:.2f}**, p50 "
            f"x{full[0] / small[0]:.2f}; each with {full[2]})",
            f"- purge as of day {args.days}: {purge_seconds:.1f} s; dropped "
            f"{len(report.partitions)} partitions ({', '.join(report.partitions[:3])}, ...), "
            f"rows: {dict(sorted((k, v) for k, v in report.rows.items() if v))}; "
            f"**longest step {report.longest_step * 1000:.0f} ms**",
            f"- after the purge: {after['links_rows']:,} links "
            f"({after['links_bytes'] / 2**30:.2f} GiB), {after['clicks_rows']:,} clicks "
            f"({after['clicks_bytes'] / 2**30:.2f} GiB)",
            f"- campaign statistics: {stats_before:.1f} ms before the purge, {stats_after:.1f} ms "
            f"after; create_links with 100,000 recipients: {create_before:.2f} s before, "
            f"{create_after:.2f} s after",
        ]
        return lines
    finally:
        await pool.close()
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=20_000_000)
    parser.add_argument("--clicks", type=int, default=20_000_000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shortlink-data-")))
        server_url = os.environ.get("DATABASE_URL")
        if server_url is None:
            server_url = embedded.ensure_postgres(work)
            stack.callback(embedded.stop_postgres, work)
        database = f"shortlink_databench_{os.getpid()}"
        database_url = create_database(server_url, database)
        stack.callback(drop_database, server_url, database)
        lines = asyncio.run(run(database_url, args))
    report = "\n".join(
        [
            f"## `make bench-data`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"`make bench-data` on {platform.node()} ({os.cpu_count()} CPUs, PostgreSQL "
            f"{'embedded' if 'DATABASE_URL' not in os.environ else 'from DATABASE_URL'}): "
            f"{args.links:,} links and {args.clicks:,} clicks over {args.days} simulated days, "
            "then the purge as of the last day.",
            "",
            *lines,
            "",
        ]
    )
    print(report)
    if not args.no_write:
        write_section(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
