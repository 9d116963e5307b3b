"""Erasure by phone number (POST /v1/erasures; GDPR art. 17): one account's data about
one number, removed or nulled everywhere it is kept, the counts left as they are.

An erasure is a job with a receipt row (table erasures) that walks through STEPS, one
transaction per batch, each batch adding what it changed to the receipt's counts and
moving the receipt's cursor in the same transaction, so whoever resumes it (after a
crash, or the API's erasure job after a request's time budget ran out: `run_pending`)
goes on where it stopped and counts nothing twice. One runner at a time holds its lease
(renewed by every batch; a runner that lost it stops with ErasureTaken). What each step
changes:

- **find**: the number's links (the links index (account_id, client_identifier,
  phone_number) probed once per campaign of the account: campaign_stats lists them), and
  the links of the clicks that carry the number (clicks outlive their links: the purge);
  kept in the receipt, since the number no longer finds a link once it is erased;
- **links**: the phone number becomes null, and the redirect workers drop the cached
  copies within milliseconds (shortlink.changes), so later taps carry no number, and
  a tap recorded from now on takes the link's number, none (forwarder.recorder);
- **settle**: waits until every transaction that began before the links changed has
  ended (at most SETTLE_SECONDS): a recorder that read the link's number before it was
  erased may commit its click, outbox row and delivery after; the steps below see them;
- **clicks** of those links: phone number, client address, user agent, referer, country
  and region become null (the device, browser and bot flag, which name nobody, stay;
  so do the campaign counters);
- **conversions** of those links: the metadata the enterprise posted becomes null;
- **outbox** rows, then **deliveries** (pending, dead and delivered) of the account's
  endpoints and callbacks whose body holds the number: that click's PhoneNumber,
  UserAgent and Referrer (the address) become null, the other clicks of a batch stay as
  they were (forwarder.formats rewrites the bodies). The outbox first: a row the
  deliverer moves into a delivery meanwhile is then either erased already or found in
  the deliveries, which are read after, a page at a time in the order they were made;
- **dead_events** whose raw event holds the number (an event of this account, or one
  that cannot be read): the value becomes null, the error stays;
- **idempotency** answers of the account that hold the number: the number in them
  becomes null (the answer a retry gets shows the link as it is now); the key stays, so a
  retry still makes nothing twice.

The receipt keeps the number in clear (and the link ids) only while the erasure runs,
to find the data after a restart; the transaction of the last step clears them. For
good it keeps what was changed and the number as a salted scrypt hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from forwarder import formats
from shortlink import changes
from shortlink.clickevent import decode
from shortlink.db import Connection, is_transient
from shortlink.exceptions import ErasureTaken, InvalidClickEvent

log = logging.getLogger(__name__)

BATCH = 500  # links, or rows changed, per transaction
PAGE = 1_000  # rows read per statement when the number is looked for in bodies
LEASE = timedelta(seconds=60)  # a runner that renews nothing this long is gone
SETTLE_SECONDS = 30.0  # the longest wait for transactions older than the links step
POLL_SECONDS = 2.0  # how often the erasure job looks for erasures nobody runs
STEPS = (
    "find",
    "links",
    "settle",
    "clicks",
    "conversions",
    "outbox",
    "deliveries",
    "dead_events",
    "idempotency",
)
# scrypt's cost: about 50 ms and 16 MiB a hash, so guessing numbers (a country has some
# 10^9) against a stolen receipt costs years of CPU.
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32}
_CLICK_DETAILS = """
    phone_number = NULL, client_ip = NULL, user_agent = NULL, referer = NULL,
    country = NULL, region = NULL
"""
_HAS_DETAILS = """(phone_number IS NOT NULL OR client_ip IS NOT NULL OR user_agent IS NOT NULL
                   OR referer IS NOT NULL OR country IS NOT NULL OR region IS NOT NULL)"""
_COUNTS = ("links", "clicks", "conversions", "deliveries")

# Called with a step's name before the step runs (and with "settle-waiting" when the
# settle step finds older transactions): tests run the step's racing work there.
Hook = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Erasure:
    erasure_id: int
    links: int
    clicks: int
    conversions: int
    deliveries: int

    def public(self) -> dict[str, int]:
        return {
            "erasure_id": self.erasure_id,
            "links": self.links,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True)
class Job:
    """A running erasure as its steps see it."""

    erasure_id: int
    account_id: int
    phone: str
    link_ids: list[int]
    owner: uuid.UUID


class _OutOfTime(Exception):
    """The runner's time budget is spent (between two batches)."""


def phone_hash(phone: str, salt: bytes) -> bytes:
    """The receipt's hash of a normalised number (scrypt, `salt` of 16 bytes)."""
    return hashlib.scrypt(phone.encode(), salt=salt, **_SCRYPT)


async def erase(
    conn: Connection, account_id: int, phone: str, *, hook: Hook | None = None
) -> Erasure:
    """Erase `phone` (normalised: shortlink.validation.phone_number) from the account, to
    the end."""
    owner = uuid.uuid4()
    erasure_id = await start(conn, account_id, phone, owner)
    done = await run(conn, erasure_id, owner, hook=hook)
    assert done is not None  # noqa: S101 - no budget: it runs to the end
    return done


async def start(conn: Connection, account_id: int, phone: str, owner: uuid.UUID) -> int:
    """Make the receipt of a new erasure, leased to `owner`; its id."""
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(phone_hash, phone, salt)
    erasure_id: int = await conn.fetchval(
        """
        INSERT INTO erasures (account_id, phone_salt, phone_hash, links, clicks, conversions,
                              deliveries, requested_at, finished_at, state, phone_number,
                              lease_owner, lease_until)
        VALUES ($1, $2, $3, 0, 0, 0, 0, now(), NULL, 'running', $4, $5, now() + $6::interval)
        RETURNING id
        """,
        account_id,
        salt,
        digest,
        phone,
        owner,
        LEASE,
    )
    return erasure_id


async def run(
    conn: Connection,
    erasure_id: int,
    owner: uuid.UUID,
    *,
    budget: float | None = None,
    hook: Hook | None = None,
) -> Erasure | None:
    """Carry the erasure on (its lease is `owner`'s) to the end: the receipt; or, when
    `budget` seconds pass first, stop between two batches, give the lease up (for the
    erasure job) and answer None. ErasureTaken if another runner holds the lease."""
    deadline = None if budget is None else time.monotonic() + budget
    try:
        while True:
            row = await _leased(conn, erasure_id, owner)
            if row["state"] == "done":
                return _receipt(row)
            job = Job(
                erasure_id, row["account_id"], row["phone_number"], row["link_ids"] or [], owner
            )
            if deadline is not None and time.monotonic() >= deadline:
                raise _OutOfTime
            name = STEPS[row["step"]]
            if hook is not None:
                await hook(name)
            cursor = orjson.loads(row["cursor"]) if row["cursor"] is not None else None
            await _STEPS[name](conn, job, cursor, _Progress(job, deadline, hook))
            async with conn.transaction():
                await _advance(conn, job, row["step"] + 1)
    except _OutOfTime:
        await conn.execute(
            "UPDATE erasures SET lease_owner = NULL, lease_until = NULL "
            "WHERE id = $1 AND lease_owner = $2",
            erasure_id,
            owner,
        )
        return None


async def state(conn: Connection, account_id: int, erasure_id: int) -> dict[str, Any] | None:
    """The erasure as GET /v1/erasures/{id} shows it; None if not the account's."""
    row = await conn.fetchrow(
        """
        SELECT id, state, links, clicks, conversions, deliveries, requested_at, finished_at
        FROM erasures WHERE id = $1 AND account_id = $2
        """,
        erasure_id,
        account_id,
    )
    if row is None:
        return None
    return {
        **_receipt(row).public(),
        "status": row["state"],
        "requested_at": row["requested_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


async def run_pending(pool: asyncpg.Pool, *, hook: Hook | None = None) -> int:
    """Carry on every erasure that nobody runs (its request's budget ran out, or its
    runner stopped); how many were finished."""
    finished = 0
    while True:
        owner = uuid.uuid4()
        async with pool.acquire() as conn:
            erasure_id = await conn.fetchval(
                """
                UPDATE erasures SET lease_owner = $1, lease_until = now() + $2::interval
                WHERE id = (
                    SELECT id FROM erasures
                    WHERE state = 'running' AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
                )
                RETURNING id
                """,
                owner,
                LEASE,
            )
            if erasure_id is None:
                return finished
            try:
                await run(conn, erasure_id, owner, hook=hook)
            except ErasureTaken:
                log.warning("an erasure was taken over by another runner", extra={"id": erasure_id})
                continue
            except Exception as exc:
                if is_transient(exc):
                    raise
                # Not this process's health: the erasure is tried again when its lease
                # runs out, by whichever runner comes first.
                log.exception("an erasure failed; it is tried again", extra={"id": erasure_id})
                return finished
            finished += 1


async def job(pool: asyncpg.Pool) -> None:
    """The API's supervised erasure job: carries on unfinished erasures, now and every
    POLL_SECONDS (they resume after a restart)."""
    while True:
        try:
            await run_pending(pool)
        except Exception as exc:
            if not is_transient(exc):
                raise  # to the supervisor
            # The database is away (a restart, a failover): the erasures wait for it.
            log.warning("the erasure job cannot reach the database", extra={"error": repr(exc)})
        await asyncio.sleep(POLL_SECONDS)


class _Progress:
    """A step's bookkeeping: after each batch, in the batch's transaction, its counts and
    cursor go into the receipt and the lease is renewed; between batches the budget is
    checked."""

    def __init__(self, job: Job, deadline: float | None, hook: Hook | None) -> None:
        self.job = job
        self.deadline = deadline
        self.hook = hook

    async def save(self, conn: Connection, cursor: object, **counts: int) -> None:
        """Record one batch (inside its transaction)."""
        sets = "".join(f", {name} = {name} + ${i}" for i, name in enumerate(counts, 5))
        status = await conn.execute(
            f"""
            UPDATE erasures SET cursor = $4::jsonb, lease_until = now() + $3::interval {sets}
            WHERE id = $1 AND lease_owner = $2 AND state = 'running'
            """,
            self.job.erasure_id,
            self.job.owner,
            LEASE,
            orjson.dumps(cursor).decode(),
            *counts.values(),
        )
        if status.split()[-1] != "1":
            raise ErasureTaken(self.job.erasure_id)

    def check(self) -> None:
        """Stop here (the batch before is saved) if the budget is spent."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _OutOfTime


async def _leased(conn: Connection, erasure_id: int, owner: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        """
        SELECT id, account_id, state, step, cursor, phone_number, link_ids, lease_owner,
               links, clicks, conversions, deliveries
        FROM erasures WHERE id = $1
        """,
        erasure_id,
    )
    if row is None or (row["state"] == "running" and row["lease_owner"] != owner):
        raise ErasureTaken(erasure_id)
    return row


def _receipt(row: asyncpg.Record) -> Erasure:
    return Erasure(row["id"], *(row[name] for name in _COUNTS))


async def _advance(conn: Connection, job: Job, step: int) -> None:
    """The step is done: on to the next, or, after the last, finish (number forgotten)."""
    if step < len(STEPS):
        status = await conn.execute(
            """
            UPDATE erasures SET step = $3, cursor = NULL, lease_until = now() + $4::interval
            WHERE id = $1 AND lease_owner = $2 AND state = 'running'
            """,
            job.erasure_id,
            job.owner,
            step,
            LEASE,
        )
    else:
        status = await conn.execute(
            """
            UPDATE erasures SET state = 'done', phone_number = NULL, link_ids = NULL,
                                cursor = NULL, lease_owner = NULL, lease_until = NULL,
                                finished_at = now()
            WHERE id = $1 AND lease_owner = $2 AND state = 'running'
            """,
            job.erasure_id,
            job.owner,
        )
    if status.split()[-1] != "1":
        raise ErasureTaken(job.erasure_id)


Step = Callable[[Connection, Job, Any, _Progress], Awaitable[None]]


async def _find(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    """The number's links, and the links of the clicks carrying it (clicks outlive their
    links), kept in the receipt."""
    link_ids = await _ids_by_number(conn, job.account_id, job.phone, "links", "id")
    gone = await _ids_by_number(conn, job.account_id, job.phone, "clicks", "link_id")
    status = await conn.execute(
        """
        UPDATE erasures SET link_ids = $2, lease_until = now() + $4::interval
        WHERE id = $1 AND lease_owner = $3 AND state = 'running'
        """,
        job.erasure_id,
        sorted(set(link_ids) | set(gone)),
        job.owner,
        LEASE,
    )
    if status.split()[-1] != "1":  # another runner took it over meanwhile: its list stands
        raise ErasureTaken(job.erasure_id)


async def _ids_by_number(
    conn: Connection, account_id: int, phone: str, table: str, column: str
) -> list[int]:
    """`column` of the account's rows of `table` (links or clicks) with `phone`: the
    table's (account_id, client_identifier, ...) index probed once per campaign of the
    account (campaign_stats lists them), the number a filter."""
    rows = await conn.fetch(
        f"""
        SELECT x.{column} FROM campaign_stats s
        CROSS JOIN LATERAL (
            SELECT DISTINCT {column} FROM {table}
            WHERE account_id = $1 AND client_identifier = s.campaign AND phone_number = $2
        ) AS x
        WHERE s.account_id = $1
        UNION
        SELECT {column} FROM {table}
        WHERE account_id = $1 AND client_identifier IS NULL AND phone_number = $2
        """,
        account_id,
        phone,
    )
    return sorted(row[column] for row in rows)


async def _links(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    for start in range(cursor or 0, len(job.link_ids), BATCH):
        async with conn.transaction():
            tokens = await conn.fetch(
                """
                UPDATE links SET phone_number = NULL, updated_at = now()
                WHERE account_id = $1 AND id = ANY($2::bigint[]) AND phone_number = $3
                RETURNING token
                """,
                job.account_id,
                job.link_ids[start : start + BATCH],
                job.phone,
            )
            await changes.notify(conn, [row["token"] for row in tokens])
            await progress.save(conn, start + BATCH, links=len(tokens))
        progress.check()


async def _settle(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    """Wait until the transactions that began before now (after the links step) have
    ended: one of them may hold a click recorded with the number, not yet committed."""
    since: datetime = await conn.fetchval("SELECT clock_timestamp()")
    deadline = time.monotonic() + SETTLE_SECONDS
    told = False
    while True:
        older = await conn.fetchval(
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND backend_type = 'client backend' AND state <> 'idle' AND xact_start < $1
            """,
            since,
        )
        if not older:
            return
        if time.monotonic() >= deadline:
            log.warning(
                "an erasure stopped waiting for older transactions",
                extra={"id": job.erasure_id, "transactions": older},
            )
            return
        progress.check()  # resumed, it waits again from then: the links are done
        if not told and progress.hook is not None:
            told = True
            await progress.hook("settle-waiting")
        await asyncio.sleep(0.05)


async def _clicks(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    for start in range(cursor or 0, len(job.link_ids), BATCH):
        async with conn.transaction():
            status = await conn.execute(
                f"""
                UPDATE clicks SET {_CLICK_DETAILS}
                WHERE account_id = $1 AND link_id = ANY($2::bigint[]) AND {_HAS_DETAILS}
                """,
                job.account_id,
                job.link_ids[start : start + BATCH],
            )
            await progress.save(conn, start + BATCH, clicks=int(status.split()[-1]))
        progress.check()


async def _conversions(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    for start in range(cursor or 0, len(job.link_ids), BATCH):
        async with conn.transaction():
            status = await conn.execute(
                "UPDATE conversions SET metadata = NULL "
                "WHERE link_id = ANY($1::bigint[]) AND metadata IS NOT NULL",
                job.link_ids[start : start + BATCH],
            )
            await progress.save(conn, start + BATCH, conversions=int(status.split()[-1]))
        progress.check()


async def _endpoints(conn: Connection, account_id: int) -> list[int]:
    """The account's endpoint and the callbacks its links named."""
    rows = await conn.fetch(
        "SELECT id FROM endpoints WHERE account_id = $1 OR callback_account_id = $1 ORDER BY id",
        account_id,
    )
    return [row["id"] for row in rows]


async def _outbox(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    """Outbox rows of the account's endpoints holding the number, a page of each
    endpoint's rows (its id order) at a time; cursor [endpoint id, last row id]."""
    endpoint, after = cursor or (0, 0)
    needle = job.phone.encode()
    for endpoint_id in await _endpoints(conn, job.account_id):
        if endpoint_id < endpoint:
            continue
        if endpoint_id > endpoint:
            after = 0
        while True:
            async with conn.transaction():
                rows = await conn.fetch(
                    """
                    SELECT id, hit, CASE WHEN hit THEN detail END AS detail
                    FROM (SELECT id, detail, position($3::bytea IN detail) > 0 AS hit
                          FROM outbox WHERE endpoint_id = $1 AND id > $2
                          ORDER BY id LIMIT $4) AS page
                    """,
                    endpoint_id,
                    after,
                    needle,
                    PAGE,
                )
                changed = []
                for row in rows:
                    if not row["hit"]:
                        continue
                    try:
                        detail = formats.erased_detail(row["detail"], job.phone)
                    # A detail this version cannot read: left as it is (never a retry loop).
                    except (ValueError, TypeError, AttributeError):
                        continue
                    if detail is not None:
                        changed.append((row["id"], detail))
                updated = await _update_rows(
                    conn,
                    "UPDATE outbox SET detail = v.value"
                    " FROM unnest($1::bigint[], $2::bytea[]) AS v(id, value)"
                    " WHERE outbox.id = v.id RETURNING outbox.id",
                    changed,
                )
                if rows:
                    after = rows[-1]["id"]
                await progress.save(conn, [endpoint_id, after], deliveries=updated)
            # A row gone before its update was taken out by the recorder, which puts an
            # endpoint's waiting rows back under new, higher ids: they are read next.
            if len(rows) < PAGE and updated == len(changed):
                break
            progress.check()


async def _deliveries(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    """Delivery bodies of the account's endpoints holding the number, a page of each
    endpoint's deliveries (in the order they were made) at a time; cursor [endpoint id,
    created_at, request identifier]."""
    endpoint, at, after = cursor or (0, None, None)
    needle = job.phone.encode()
    for endpoint_id in await _endpoints(conn, job.account_id):
        if endpoint_id < endpoint:
            continue
        if endpoint_id > endpoint:
            at = after = None
        while True:
            async with conn.transaction():
                rows = await conn.fetch(
                    """
                    SELECT request_identifier, created_at, format,
                           CASE WHEN position($4::bytea IN body) > 0 THEN body END AS body
                    FROM deliveries
                    WHERE endpoint_id = $1
                      AND ($2::timestamptz IS NULL
                           OR (created_at, request_identifier) > ($2, $3::uuid))
                    ORDER BY created_at, request_identifier LIMIT $5
                    """,
                    endpoint_id,
                    datetime.fromisoformat(at) if at else None,
                    after,
                    needle,
                    PAGE,
                )
                changed = []
                for row in rows:
                    if row["body"] is None:
                        continue
                    try:
                        body = formats.erased_body(row["format"], row["body"], job.phone)
                    # A body this version cannot read: left as it is (never a retry loop).
                    except (ValueError, TypeError, AttributeError):
                        continue
                    if body is not None:
                        changed.append((row["request_identifier"], body))
                updated = await _update_rows(
                    conn,
                    "UPDATE deliveries SET body = v.value"
                    " FROM unnest($1::uuid[], $2::bytea[]) AS v(id, value)"
                    " WHERE deliveries.request_identifier = v.id"
                    " RETURNING deliveries.request_identifier",
                    changed,
                )
                if rows:
                    at = rows[-1]["created_at"].isoformat()
                    after = str(rows[-1]["request_identifier"])
                await progress.save(conn, [endpoint_id, at, after], deliveries=updated)
            if len(rows) < PAGE:
                break
            progress.check()


async def _update_rows(conn: Connection, statement: str, changed: list[tuple[Any, bytes]]) -> int:
    """Run an `UPDATE ... FROM unnest($1, $2) ... RETURNING` of (key, value) pairs; the
    number of rows it changed (a row that went meanwhile is not counted)."""
    if not changed:
        return 0
    keys, values = zip(*changed, strict=True)
    return len(await conn.fetch(statement, list(keys), list(values)))


async def _dead_events(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    """Raw events kept in dead_events holding the number: of this account, or unreadable
    (no account to tell): their value becomes null, a page of the table at a time."""
    after = cursor or 0
    needle = job.phone.encode()
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                """
                SELECT id, value FROM dead_events
                WHERE id > $1 ORDER BY id LIMIT $2
                """,
                after,
                PAGE,
            )
            hits = [row["id"] for row in rows if _dead_event_holds(row["value"], needle, job)]
            if hits:
                await conn.execute(
                    "UPDATE dead_events SET value = NULL WHERE id = ANY($1::bigint[])", hits
                )
            if rows:
                after = rows[-1]["id"]
            await progress.save(conn, after)
        if len(rows) < PAGE:
            return
        progress.check()


def _dead_event_holds(value: bytes | None, needle: bytes, job: Job) -> bool:
    if value is None or needle not in value:
        return False
    try:
        event = decode(value)
    except InvalidClickEvent:
        return True  # whose it is cannot be told: erased for whoever asks
    return event.account_id == job.account_id


async def _idempotency(conn: Connection, job: Job, cursor: Any, progress: _Progress) -> None:
    """Stored answers of the account's requests (POST /v1/links lists numbers) with the
    number nulled where a JSON value is the number, a page of the account's keys at a time."""
    after = cursor or ""
    needle = job.phone.encode()
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                """
                SELECT key, hit, CASE WHEN hit THEN response END AS response
                FROM (SELECT key, response, position($3::bytea IN response) > 0 AS hit
                      FROM idempotency_keys WHERE account_id = $1 AND key > $2
                      ORDER BY key LIMIT $4) AS page
                """,
                job.account_id,
                after,
                needle,
                PAGE,
            )
            changed = []
            for row in rows:
                if row["hit"]:
                    response = _without(row["response"], job.phone)
                    if response is not None:
                        changed.append((job.account_id, row["key"], response))
            if changed:
                await conn.executemany(
                    "UPDATE idempotency_keys SET response = $3 WHERE account_id = $1 AND key = $2",
                    changed,
                )
            if rows:
                after = rows[-1]["key"]
            await progress.save(conn, after)
        if len(rows) < PAGE:
            return
        progress.check()


def _without(response: bytes, phone: str) -> bytes | None:
    """A stored JSON answer with every string value equal to `phone` made null; None if it
    is not JSON or holds no such value."""
    try:
        data = orjson.loads(response)
    except orjson.JSONDecodeError:
        return None
    found = False

    def walk(value: Any) -> Any:
        nonlocal found
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if value == phone:
            found = True
            return None
        return value

    cleaned = walk(data)
    return orjson.dumps(cleaned) if found else None


_STEPS: dict[str, Step] = {
    "find": _find,
    "links": _links,
    "settle": _settle,
    "clicks": _clicks,
    "conversions": _conversions,
    "outbox": _outbox,
    "deliveries": _deliveries,
    "dead_events": _dead_events,
    "idempotency": _idempotency,
}
