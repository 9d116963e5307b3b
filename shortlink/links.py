"""Links: what the redirect server looks up, and how links are created in bulk."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from shortlink import changes, domains, partitions, tokens
from shortlink.db import Connection, Executor
from shortlink.exceptions import TokenSpaceExhausted

DEFAULT_LIFETIME = timedelta(days=90)
UNCHANGED: object = object()  # update(): leave this field as it is
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# With 62**6 possible tokens even a large table collides rarely; this many rounds
# of collisions in a row means the token space is nearly full.
_MAX_ROUNDS = 12
_SLICE = 1_000  # rows handled between two turns of the event loop in a bulk create


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exact (no float rounding)."""
    return (moment - _EPOCH) // _MILLISECOND


@dataclass(frozen=True, slots=True)
class LinkEntry:
    """A link as the redirect server caches it: everything a click event needs."""

    id: int
    token: str
    account_id: int
    target_url: str
    phone_number: str | None
    client_ref: str | None
    client_identifier: str | None
    created_at_ms: int
    expires_at: float  # Unix seconds, compared with time.time() on every hit
    unsafe: bool
    disabled: bool
    expired_url: str | None = None  # where a tap goes once it expired (the link's own)
    rules: str | None = None  # the request's rules (shortlink.rules.canonical), None: none
    variant: int | None = None  # the variant this link got (target_url is its URL)
    domain: str | None = None  # the branded domain it answers on (None: SHORT_DOMAIN)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> LinkEntry:
        """A row of ENTRY_COLUMNS, in that order."""
        return cls(
            id=row[1],
            token=row[0],
            account_id=row[2],
            target_url=row[3],
            phone_number=row[4],
            client_ref=row[5],
            client_identifier=row[6],
            created_at_ms=row[7],
            expires_at=row[8],
            unsafe=row[9],
            disabled=row[10],
            expired_url=row[11],
            rules=row[12],
            variant=row[13],
            domain=row[14],
        )

    @classmethod
    def made(
        cls, account_id: int, created: CreatedLink, spec: NewLink, domain: str | None = None
    ) -> LinkEntry:
        """The entry of a link create_links just made from `spec` (not disabled), on
        `domain`."""
        return cls(
            id=created.id,
            token=created.token,
            account_id=account_id,
            target_url=spec.target_url,
            phone_number=spec.phone_number,
            client_ref=spec.client_ref,
            client_identifier=spec.client_identifier,
            created_at_ms=epoch_ms(created.created_at),
            expires_at=created.expires_at.timestamp(),
            unsafe=spec.unsafe,
            disabled=False,
            expired_url=spec.expired_url,
            rules=spec.rules,
            variant=spec.variant,
            domain=domain,
        )


# What the redirect server reads of a link, with the times as epoch numbers so no
# datetime is made per row (floor: the same truncation as epoch_ms).
ENTRY_COLUMNS = """
    token, id, account_id, target_url, phone_number, client_ref, client_identifier,
    floor(extract(epoch FROM created_at) * 1000)::int8 AS created_at_ms,
    extract(epoch FROM expires_at)::float8 AS expires_at,
    unsafe, disabled_at IS NOT NULL AS disabled, expired_url, rules, variant, domain
"""


async def fetch_entry(pool: Executor, token: str) -> LinkEntry | None:
    """The link behind `token`, or None when there is none."""
    rows = await fetch_rows(pool, [token])
    return LinkEntry.from_row(rows[0]) if rows else None


async def fetch_rows(conn: Executor, tokens: Sequence[str]) -> list[asyncpg.Record]:
    """The rows (ENTRY_COLUMNS) of those of `tokens` that exist, in one query: each token is
    looked for in its tag's partition and the legacy one (shortlink.partitions)."""
    now = datetime.now(UTC)
    periods = {period for token in tokens for period in partitions.token_periods(token, now)}
    return await conn.fetch(
        f"""
        SELECT {ENTRY_COLUMNS} FROM links
        WHERE token = ANY($1::text[]) AND {partitions.periods_in("period", periods)}
        """,
        list(tokens),
    )


async def fetch_id_range(conn: Executor, first: int, last: int) -> list[asyncpg.Record]:
    """The live links (ENTRY_COLUMNS) with first <= id <= last.

    Callers read a long range in windows of ids, not with LIMIT: right after a bulk
    insert the table's statistics do not know the new rows yet, and a LIMIT query
    over the rest of the range was planned as a scan of all of it per slice.
    """
    return await conn.fetch(
        f"""
        SELECT {ENTRY_COLUMNS} FROM links
        WHERE id BETWEEN $1 AND $2 AND period BETWEEN $3 AND $4 AND disabled_at IS NULL
        """,
        first,
        last,
        partitions.period_of_id(first),
        partitions.period_of_id(last),
    )


async def first_id_since(conn: Executor, since: datetime) -> int | None:
    """About the smallest id of the links created at or after `since`, or None if none are.

    A binary search over the primary key (ids grow with creation time; links have
    no index on created_at, and a scan of the table would take seconds): a few
    dozen single-row lookups whatever the table's size. The search starts in the
    period of `since` (ids carry their period), so older partitions are not read, but
    for the legacy one.
    """
    floor = partitions.period_of(since)
    # The links made before partitioning (period 0) may be that recent too.
    bounds = await conn.fetchrow(
        "SELECT min(id) AS low, max(id) AS high FROM links WHERE period >= $1 OR period = 0",
        floor,
    )
    if bounds is None or bounds["high"] is None:
        return None
    low, high = bounds["low"], bounds["high"]
    newest = await conn.fetchval(
        "SELECT created_at FROM links WHERE id = $1 AND period = $2",
        high,
        partitions.period_of_id(high),
    )
    if newest is None or newest < since:
        return None
    while low < high:
        middle = (low + high) // 2
        row = await conn.fetchrow(
            """
            SELECT id, created_at FROM links WHERE id >= $1 AND (period >= $2 OR period = 0)
            ORDER BY id LIMIT 1
            """,
            middle,
            partitions.period_of_id(middle),
        )
        if row is not None and row["created_at"] < since:
            low = row["id"] + 1  # everything up to this row is older
        else:
            high = middle
    return int(low)


async def changed_since(conn: Executor, since: datetime) -> list[asyncpg.Record]:
    """(token, updated_at) of the links changed at or after `since` (a partial index)."""
    return await conn.fetch(
        "SELECT token, updated_at FROM links WHERE updated_at >= $1 ORDER BY updated_at", since
    )


@dataclass(frozen=True, slots=True)
class NewLink:
    """One link to create."""

    target_url: str
    phone_number: str | None = None
    client_ref: str | None = None
    client_identifier: str | None = None
    expires_at: datetime | None = None  # None: `lifetime` from creation
    unsafe: bool = False
    lifetime: timedelta = DEFAULT_LIFETIME
    expired_url: str | None = None  # None: the account's, else the 410 page
    rules: str | None = None  # shortlink.rules.canonical text
    variant: int | None = None  # the variant chosen for this link (target_url is its URL)


@dataclass(frozen=True, slots=True)
class CreatedLink:
    id: int
    token: str
    created_at: datetime
    expires_at: datetime


_IMPORT_COLUMNS = (
    "position",
    "token",
    "target_url",
    "phone_number",
    "client_ref",
    "client_identifier",
    "expires_at",
    "unsafe",
    "expired_url",
    "rules",
    "variant",
)


async def create_links(
    conn: Connection,
    account_id: int,
    links: Sequence[NewLink],
    *,
    token_length: int = tokens.DEFAULT_LENGTH,
    callback_id: int | None = None,
    domain: str | None = None,
) -> list[CreatedLink]:
    """Insert `links` for `account_id` in one transaction; results in input order.

    `callback_id` is the callback destination (an endpoints row) of every link of
    this call, and `domain` their branded domain (None: SHORT_DOMAIN), written by the
    INSERT itself rather than streamed once per row; DomainGone when that domain is no
    longer a verified domain of the account.

    Rows are streamed with COPY into a temporary table, then inserted with
    ON CONFLICT (token) DO NOTHING: a row whose random token already exists is
    simply not inserted, gets a fresh token and goes round again. No token is
    ever checked before it is written, so concurrent creators cannot race.
    """
    if not links:
        return []
    results: list[CreatedLink | None] = [None] * len(links)
    pending = list(range(len(links)))
    campaigns = {link.client_identifier for link in links}
    async with conn.transaction():
        # A retarget of these campaigns (retarget) waits for this insert to commit, and
        # this one waits for it: the links are made wholly before or after it, and their
        # created_at (taken once the lock is held) says which to the redirect workers.
        await _lock_campaigns(conn, account_id, campaigns, shared=True)
        if domain is not None:  # a removal of the domain waits for these links (or wins)
            await domains.hold(conn, account_id, domain)
        now = datetime.now(UTC)
        period = partitions.period_of(now)
        # Room to sort 100,000 rows by position in memory rather than on disk.
        await conn.execute("SET LOCAL work_mem = '64MB'")
        await conn.execute(
            """
            CREATE TEMP TABLE link_import (
                position integer, token text COLLATE "C", target_url text, phone_number text,
                client_ref text, client_identifier text, expires_at timestamptz, unsafe boolean,
                expired_url text, rules text, variant smallint
            ) ON COMMIT DROP
            """
        )
        for _ in range(_MAX_ROUNDS):
            fresh = await _unique_tokens(len(pending), token_length, partitions.tag(period))
            by_token = dict(zip(fresh, pending, strict=True))
            await conn.copy_records_to_table(
                "link_import", columns=_IMPORT_COLUMNS, records=_import_rows(links, by_token, now)
            )
            # The id carries the period (shortlink.partitions). A token is unique within
            # its period by the constraint, against the other live periods by its tag,
            # and against the links made before partitioning (never written again) by
            # NOT EXISTS.
            rows = await conn.fetch(
                """
                INSERT INTO links (id, period, token, account_id, target_url, phone_number,
                                   client_ref, client_identifier, created_at, expires_at,
                                   unsafe, callback_id, expired_url, rules, variant, domain)
                SELECT $4::int8 | nextval('links_sequence'), $5, token, $1, target_url,
                       phone_number, client_ref, client_identifier, $2, expires_at, unsafe, $3,
                       expired_url, rules, variant, $6::text
                FROM link_import i
                WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.period = 0 AND l.token = i.token)
                ORDER BY position
                ON CONFLICT (token, period) DO NOTHING
                RETURNING id, token
                """,
                account_id,
                now,
                callback_id,
                partitions.first_id(period),
                period,
                domain,
            )
            await conn.execute("TRUNCATE link_import")
            for start in range(0, len(rows), _SLICE):
                if start:
                    await asyncio.sleep(0)
                for link_id, token in rows[start : start + _SLICE]:
                    position = by_token.pop(token)
                    spec = links[position]
                    # The times are the ones just written: asyncpg took 1.2 us a row
                    # to read them back, most of the cost of 200,000 returned rows.
                    results[position] = CreatedLink(link_id, token, now, _expiry(spec, now))
            pending = sorted(by_token.values())
            if not pending:
                await _count_campaign_links(conn, account_id, links)
                made = [link for link in results if link is not None]
                # The redirect workers read these into memory as the transaction commits.
                await changes.notify_created(conn, (link.id for link in made))
                return made
        # Raised inside the transaction, so nothing of this call is kept.
        raise TokenSpaceExhausted(
            f"{len(pending)} links kept colliding after {_MAX_ROUNDS} rounds: "
            f"use longer tokens (TOKEN_LENGTH, now {token_length})"
        )


async def _import_rows(
    links: Sequence[NewLink], by_token: dict[str, int], now: datetime
) -> AsyncIterator[tuple[object, ...]]:
    """The COPY rows of link_import, giving the event loop a turn every _SLICE rows (asyncpg
    encodes a plain iterable in one go: 200,000 rows held the loop for a quarter of a second)."""
    for count, (token, position) in enumerate(by_token.items()):
        if count % _SLICE == _SLICE - 1:
            await asyncio.sleep(0)
        link = links[position]
        yield (
            position,
            token,
            link.target_url,
            link.phone_number,
            link.client_ref,
            link.client_identifier,
            _expiry(link, now),
            link.unsafe,
            link.expired_url,
            link.rules,
            link.variant,
        )


def _expiry(link: NewLink, now: datetime) -> datetime:
    """When `link` expires: never later than MAX_LIFETIME_DAYS after it is made, so its
    whole life fits its token's tag (shortlink.partitions)."""
    longest = now + timedelta(days=partitions.MAX_LIFETIME_DAYS)
    return min(link.expires_at or now + link.lifetime, longest)


async def _count_campaign_links(
    conn: Connection, account_id: int, links: Sequence[NewLink]
) -> None:
    """Keep campaign_stats.links (the statistics' link count) in step with the insert, and
    note the campaigns given rules or variants (shortlink.campaigns.destinations)."""
    counts: Counter[str] = Counter()
    smart: set[str] = set()
    for start in range(0, len(links), _SLICE):
        if start:
            await asyncio.sleep(0)
        part = links[start : start + _SLICE]
        counts.update(link.client_identifier or "" for link in part)
        smart.update(
            link.client_identifier
            for link in part
            if link.client_identifier and (link.rules is not None or link.variant is not None)
        )
    if smart:
        await mark_smart(conn, account_id, smart)
    await conn.execute(
        """
        INSERT INTO campaign_stats (account_id, campaign, links)
        SELECT $1, campaign, n FROM unnest($2::text[], $3::bigint[]) AS u(campaign, n)
        ON CONFLICT (account_id, campaign)
        DO UPDATE SET links = campaign_stats.links + excluded.links
        """,
        account_id,
        list(counts),
        list(counts.values()),
    )


async def _unique_tokens(count: int, length: int, tag: str) -> list[str]:
    """`count` distinct fresh tokens, made _SLICE at a time."""
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        if chosen:
            await asyncio.sleep(0)
        chosen.update(dict.fromkeys(tokens.generate(min(count - len(chosen), _SLICE), length, tag)))
    return list(chosen)


_VIEW = """
    SELECT l.id, l.token, l.target_url, l.phone_number, l.client_ref, l.client_identifier,
           l.created_at, l.expires_at, l.unsafe, l.disabled_at, l.expired_url, l.rules,
           l.variant, l.domain,
           coalesce(
               (SELECT f.clicked_at FROM first_clicks f WHERE f.link_id = l.id),
               l.first_clicked_at
           ) AS first_clicked_at,
           -- The clicks partitions before the link's are not read (a day's margin: a redirect
           -- server's clock may be behind the API's).
           (SELECT count(*) FROM clicks c
            WHERE c.link_id = l.id AND c.clicked_at >= l.created_at - interval '1 day'
              AND NOT c.is_bot) AS clicks,
           (SELECT e.url FROM endpoints e WHERE e.id = l.callback_id) AS callback_url
    FROM links l
"""


async def find(conn: Executor, account_id: int, token: str) -> asyncpg.Record | None:
    """One of the account's links by token, with its human click count."""
    return await conn.fetchrow(
        f"{_VIEW} WHERE l.token = $1 AND l.account_id = $2 AND {_partition_of('l', token)}",
        token,
        account_id,
    )


def _partition_of(alias: str, token: str) -> str:
    """The SQL condition naming the partitions `token` may be in (partitions.periods_in)."""
    periods = partitions.token_periods(token, datetime.now(UTC))
    return partitions.periods_in(f"{alias}.period", periods)


async def find_by_client_ref(
    conn: Executor, account_id: int, client_ref: str, limit: int = 1000
) -> list[asyncpg.Record]:
    """The account's links of one message (client_ref), oldest first."""
    return await conn.fetch(
        f"{_VIEW} WHERE l.account_id = $1 AND l.client_ref = $2 ORDER BY l.id LIMIT $3",
        account_id,
        client_ref,
        limit,
    )


async def update(
    conn: Connection,
    account_id: int,
    token: str,
    *,
    target_url: str | None = None,
    expires_at: datetime | None = None,
    unsafe: bool | None = None,
    expired_url: object = UNCHANGED,
    rules: object = UNCHANGED,
) -> bool:
    """Change a link's target (which ends its variant), expiry, unsafe flag, expired_url
    or rules (None removes either) and tell the redirect workers."""
    async with conn.transaction():
        status = await conn.execute(
            f"""
            UPDATE links l SET target_url = coalesce($3, target_url),
                             -- a new url ends the variant, as a campaign's retarget does
                             variant = CASE WHEN $3 IS NULL THEN variant END,
                             expires_at = CASE WHEN $4::timestamptz IS NULL THEN expires_at
                                          ELSE least($4, created_at + $8::interval) END,
                             unsafe = coalesce($5, unsafe),
                             expired_url = CASE WHEN $6 THEN $7 ELSE expired_url END,
                             rules = CASE WHEN $9 THEN $10 ELSE rules END,
                             updated_at = now()
            WHERE token = $1 AND account_id = $2 AND {_partition_of("l", token)}
            """,
            token,
            account_id,
            target_url,
            expires_at,
            unsafe,
            expired_url is not UNCHANGED,
            None if expired_url is UNCHANGED else expired_url,
            # No link outlives its partition's token tag (shortlink.partitions).
            timedelta(days=partitions.MAX_LIFETIME_DAYS),
            rules is not UNCHANGED,
            None if rules is UNCHANGED else rules,
        )
        if status != "UPDATE 1":
            return False
        if rules is not UNCHANGED and rules is not None:
            await conn.execute(
                f"""
                INSERT INTO campaign_destinations (account_id, campaign)
                SELECT account_id, client_identifier FROM links l
                WHERE token = $1 AND account_id = $2 AND {_partition_of("l", token)}
                  AND client_identifier IS NOT NULL
                ON CONFLICT DO NOTHING
                """,
                token,
                account_id,
            )
        await changes.notify(conn, [token])
    return True


async def disable(conn: Connection, account_id: int, token: str) -> bool:
    """Disable a link (it answers 410 from now on) and tell the redirect workers."""
    async with conn.transaction():
        status = await conn.execute(
            f"""
            UPDATE links l SET disabled_at = coalesce(disabled_at, now()), updated_at = now()
            WHERE token = $1 AND account_id = $2 AND {_partition_of("l", token)}
            """,
            token,
            account_id,
        )
        if status != "UPDATE 1":
            return False
        await changes.notify(conn, [token])
    return True


async def retarget(
    conn: Connection,
    account_id: int,
    campaign: str,
    *,
    target_url: str | None,
    rules: object = UNCHANGED,
) -> int:
    """Change every link of a campaign (a new url drops the variants; rules None removes
    them), in the caller's transaction; the number of links changed. One notification
    tells the redirect workers (shortlink.changes.notify_campaign), which change the
    campaign's cached groups in place: the links' updated_at is not touched, so no worker
    drops 200,000 tokens one by one. Waits for the links of the campaign being inserted
    (create_links) to commit, so that it changes them too."""
    await _lock_campaigns(conn, account_id, [campaign], shared=False)
    status = await conn.execute(
        """
        UPDATE links SET target_url = coalesce($3, target_url),
                         variant = CASE WHEN $3 IS NULL THEN variant END,
                         rules = CASE WHEN $4 THEN $5 ELSE rules END
        WHERE account_id = $1 AND client_identifier = $2
        """,
        account_id,
        campaign,
        target_url,
        rules is not UNCHANGED,
        None if rules is UNCHANGED else rules,
    )
    count = int(status.split()[-1])
    await conn.execute(
        """
        INSERT INTO campaign_destinations AS d (account_id, campaign, url, url_changed_at,
                                                rules, rules_changed_at, changed_at)
        VALUES ($1, $2, $3::text, CASE WHEN $3 IS NOT NULL THEN clock_timestamp() END,
                $5, CASE WHEN $4 THEN clock_timestamp() END, clock_timestamp())
        ON CONFLICT (account_id, campaign) DO UPDATE
        -- Each field keeps the time of its own last change: a rules-only change must not
        -- give an earlier url to the links made since that url was set.
        SET url = coalesce(excluded.url, d.url),
            url_changed_at = coalesce(excluded.url_changed_at, d.url_changed_at),
            rules = CASE WHEN $4 THEN excluded.rules ELSE d.rules END,
            rules_changed_at = coalesce(excluded.rules_changed_at, d.rules_changed_at),
            changed_at = clock_timestamp()
        """,
        account_id,
        campaign,
        target_url,
        rules is not UNCHANGED,
        None if rules is UNCHANGED else rules,
    )
    await changes.notify_campaign(conn, account_id, campaign)
    return count


# The class of the transaction locks on (account, campaign) that order a retarget with
# the link inserts of its campaign (arbitrary constant; the hash of both is the object).
_CAMPAIGN_LOCK_CLASS = 0x726574


async def _lock_campaigns(
    conn: Connection, account_id: int, campaigns: Iterable[str | None], *, shared: bool
) -> None:
    """Take the transaction's lock on each campaign: shared to insert links, exclusive to
    retarget (a hash collision only orders two unrelated campaigns' writes)."""
    names = sorted(name for name in campaigns if name is not None)
    if not names:
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(
        f"""
        SELECT {function}($1, hashtext($2::text || ' ' || name))
        FROM unnest($3::text[]) AS name ORDER BY name
        """,
        _CAMPAIGN_LOCK_CLASS,
        str(account_id),
        names,
    )


async def mark_smart(conn: Executor, account_id: int, campaigns: Iterable[str]) -> None:
    """Note campaigns that have links with rules or variants: only these have statistics by
    variant and by rule, which group the campaign's clicks (shortlink.campaigns.destinations)."""
    await conn.execute(
        """
        INSERT INTO campaign_destinations (account_id, campaign)
        SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING
        """,
        account_id,
        list(campaigns),
    )


async def keep_variants(
    conn: Executor, account_id: int, campaign: str, variants: Sequence[tuple[str, int]]
) -> None:
    """Keep a campaign's variants (url, weight), for its statistics' by_variant."""
    await conn.execute(
        """
        INSERT INTO campaign_destinations (account_id, campaign, variants)
        VALUES ($1, $2, $3::jsonb)
        ON CONFLICT (account_id, campaign) DO UPDATE SET variants = excluded.variants
        """,
        account_id,
        campaign,
        orjson.dumps([{"url": url, "weight": weight} for url, weight in variants]).decode(),
    )


async def campaign_destination(
    conn: Executor, account_id: int, campaign: str
) -> asyncpg.Record | None:
    """(url, url_changed_at, rules, rules_changed_at, changed_at) of a campaign's
    retargeting, or None."""
    return await conn.fetchrow(
        """
        SELECT url, url_changed_at, rules, rules_changed_at, changed_at
        FROM campaign_destinations
        WHERE account_id = $1 AND campaign = $2 AND changed_at IS NOT NULL
        """,
        account_id,
        campaign,
    )


async def retargeted_since(conn: Executor, since: datetime) -> list[asyncpg.Record]:
    """The campaigns retargeted at or after `since` (a redirect worker catching up)."""
    return await conn.fetch(
        """
        SELECT account_id, campaign, url, url_changed_at, rules, rules_changed_at, changed_at
        FROM campaign_destinations WHERE changed_at >= $1 ORDER BY changed_at
        """,
        since,
    )
