"""Erasure: the redirect workers drop the cached number within a second; the erasure
as a resumable job (budgets, resumption, leases) and the races it closes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from forwarder.config import ForwarderConfig
from forwarder.outbox import Outbox
from forwarder.recorder import record
from shortlink import accounts, clickevent, erasures
from shortlink.config import ServiceConfig
from shortlink.db import Connection
from shortlink.exceptions import ErasureTaken
from shortlink.links import LinkEntry
from shortlink.pool import open_pool
from shortlink.redirect.cache import CACHE
from shortlink.redirect.entries import unpack
from tests.clicks import clicks, events, make_links
from tests.forwarder.endpoint import set_endpoint
from tests.infra import RunningServer, all_published, consume, tap, wait_until
from tests.shortlink.redirect.test_app import make_link

PHONE = "447700900123"


async def test_the_redirect_caches_drop_the_number_within_a_second(
    redirect_server: RunningServer,
    cold_redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Every worker holding the link drops its number within 1 s; the link keeps redirecting
    and its next tap's click event carries no number."""
    token = await make_link(db, account_id, phone_number=PHONE)
    workers = (redirect_server, cold_redirect_server)
    for worker in workers:
        assert await tap(worker, token) == 302
        found = worker.app[CACHE].find(token)
        assert found is not None
        assert unpack(found[1])[1] == PHONE
    erased = await erasures.erase(db, account_id, PHONE)
    assert erased.links == 1

    def forgotten() -> bool:
        for worker in workers:
            found = worker.app[CACHE].find(token)
            if found is not None and unpack(found[1])[1] is not None:
                return False
        return True

    await wait_until(forgotten, within=1.0, step=0.01, what="the number dropped everywhere")
    assert await tap(redirect_server, token) == 302
    await all_published(redirect_server)
    published = await consume(kafka_bootstrap, click_topic, 3, to_end=True)
    numbers = [clickevent.decode(record.value).phone_number for record in published]
    assert numbers[-1] is None


# The erasure as a resumable job (shortlink.erasures): budgets, resumption, races.

ERASED = "447700900777"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(ServiceConfig.from_env({"DATABASE_URL": database_url})) as opened:
        yield opened


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    """An outbox that turns every waiting click into a delivery at once (no linger)."""
    config = ForwarderConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "DELIVERY_LINGER_MS": "0",
            "DELIVERY_BATCH_SIZE": "2",
            "ALLOW_PRIVATE_ENDPOINTS": "true",
        }
    )
    async with open_pool(config.service) as opened:
        yield Outbox(config, opened)


async def number_left(db: asyncpg.Connection, account_id: int, phone: str) -> list[str]:
    """Where the account still keeps `phone`: clicks, links, outbox rows, delivery bodies."""
    needle = phone.encode()
    found = []
    if await db.fetchval(
        "SELECT count(*) FROM clicks WHERE account_id = $1 AND phone_number = $2", account_id, phone
    ):
        found.append("clicks")
    if await db.fetchval(
        "SELECT count(*) FROM links WHERE account_id = $1 AND phone_number = $2", account_id, phone
    ):
        found.append("links")
    for table, column in (("outbox", "detail"), ("deliveries", "body")):
        hits = await db.fetchval(
            f"""
            SELECT count(*) FROM {table} t JOIN endpoints e ON e.id = t.endpoint_id
            WHERE e.account_id = $1 AND position($2::bytea IN t.{column}) > 0
            """,
            account_id,
            needle,
        )
        if hits:
            found.append(table)
    return found


async def number_links(db: asyncpg.Connection, account_id: int, count: int) -> list[LinkEntry]:
    return await make_links(db, account_id, count, phone_number=ERASED)


async def test_an_erasure_out_of_budget_is_carried_on_by_the_job(
    db: asyncpg.Connection, account_id: int, pool: asyncpg.Pool
) -> None:
    """A runner whose budget is spent stops between batches and gives the lease up, the
    number kept in the receipt only while it runs; the job finishes it."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await number_links(db, account_id, 3)
    await record(db, events(clicks(links)), batch_size=2)
    owner = uuid.uuid4()
    erasure_id = await erasures.start(db, account_id, ERASED, owner)
    assert await erasures.run(db, erasure_id, owner, budget=0.0) is None
    receipt = await db.fetchrow("SELECT * FROM erasures WHERE id = $1", erasure_id)
    assert (receipt["state"], receipt["phone_number"], receipt["lease_owner"]) == (
        "running",
        ERASED,
        None,
    )
    assert await erasures.run_pending(pool) >= 1
    receipt = await db.fetchrow("SELECT * FROM erasures WHERE id = $1", erasure_id)
    assert receipt["state"] == "done"
    assert (receipt["phone_number"], receipt["link_ids"]) == (None, None)
    assert (receipt["links"], receipt["clicks"], receipt["deliveries"]) == (3, 3, 2)
    assert await number_left(db, account_id, ERASED) == []


async def test_a_resumed_erasure_counts_nothing_twice(
    db: asyncpg.Connection, account_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped after every single batch (batches of one) and resumed each time from its
    cursor, an erasure ends with the same counts and data as one run to the end."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await number_links(db, account_id, 5)
    await record(db, events(clicks(links)), batch_size=2)
    monkeypatch.setattr(erasures, "BATCH", 1)
    monkeypatch.setattr(erasures, "PAGE", 1)

    def spent(self: object) -> None:
        raise erasures._OutOfTime

    monkeypatch.setattr(erasures._Progress, "check", spent)
    owner = uuid.uuid4()
    erasure_id = await erasures.start(db, account_id, ERASED, owner)
    runs = 0
    while (done := await erasures.run(db, erasure_id, owner)) is None:
        runs += 1
        await db.execute("UPDATE erasures SET lease_owner = $2 WHERE id = $1", erasure_id, owner)
    assert runs > 10  # it really stopped batch after batch
    assert (done.links, done.clicks, done.conversions, done.deliveries) == (5, 5, 0, 3)
    assert await number_left(db, account_id, ERASED) == []


async def test_a_runner_that_lost_its_lease_stops(db: asyncpg.Connection, account_id: int) -> None:
    """Another runner took the erasure over: the first stops at its next batch, changing
    nothing more and counting nothing."""
    await number_links(db, account_id, 2)
    owner = uuid.uuid4()
    erasure_id = await erasures.start(db, account_id, ERASED, owner)

    async def taken(step: str) -> None:
        if step == "links":
            await db.execute(
                "UPDATE erasures SET lease_owner = $2 WHERE id = $1", erasure_id, uuid.uuid4()
            )

    with pytest.raises(ErasureTaken):
        await erasures.run(db, erasure_id, owner, hook=taken)
    assert await db.fetchval("SELECT links FROM erasures WHERE id = $1", erasure_id) == 0


@pytest.mark.parametrize("step", erasures.STEPS)
async def test_taps_and_outbox_moves_between_steps_keep_no_number(
    db: asyncpg.Connection,
    database_url: str,
    account_id: int,
    outbox: Outbox,
    step: str,
) -> None:
    """A tap recorded, and the outbox's clicks moved into deliveries, just before any step
    of the erasure (the two races of the last review: a tap between the deliveries and the
    links steps; an outbox row moved into a delivery between the two scans) leave the
    number nowhere."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await number_links(db, account_id, 3)
    await record(db, events(clicks(links[:1])), batch_size=2)  # one waits in the outbox
    other = await asyncpg.connect(database_url)

    async def racing(name: str) -> None:
        if name == step:
            await record(other, events(clicks(links)), batch_size=2)
            await outbox.make_batches()

    try:
        done = await erasures.erase(db, account_id, ERASED, hook=racing)
    finally:
        await other.close()
    assert done.links == 3
    assert await number_left(db, account_id, ERASED) == []


async def test_a_recording_begun_before_the_links_changed_is_waited_for(
    db: asyncpg.Connection, database_url: str, account_id: int
) -> None:
    """A recorder's transaction that read the link's number before the links step and
    commits after it: the erasure waits for it to end, then erases what it wrote."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await number_links(db, account_id, 2)
    other = await asyncpg.connect(database_url)
    open_transaction = other.transaction()
    seen: list[str] = []

    async def racing(name: str) -> None:
        seen.append(name)
        if name == "links":  # recorded with the number, not yet committed
            await open_transaction.start()
            await record(other, events(clicks(links)), batch_size=2)
        elif name == "settle-waiting":
            await open_transaction.commit()

    try:
        await erasures.erase(db, account_id, ERASED, hook=racing)
    finally:
        await other.close()
    assert "settle-waiting" in seen
    assert await db.fetchval("SELECT count(*) FROM clicks WHERE account_id = $1", account_id) == 2
    assert await number_left(db, account_id, ERASED) == []


async def test_dead_events_and_idempotency_answers_lose_the_number(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Dead events holding the number (of this account, or unreadable) lose their value;
    another account's keep it; a stored answer keeps its key with the number made null."""
    [link] = await number_links(db, account_id, 1)
    [(_, mine)] = clicks([link])
    stranger = await accounts.create_account(db, "stranger")
    [theirs_link] = await make_links(db, stranger.account_id, 1, phone_number=ERASED)
    [(_, theirs)] = clicks([theirs_link])
    unreadable = b"garbage " + ERASED.encode()
    ids = [
        await db.fetchval(
            'INSERT INTO dead_events (topic, partition, "offset", value, error) '
            "VALUES ('t', 0, $1, $2, 'x') RETURNING id",
            offset,
            value,
        )
        for offset, value in enumerate((mine, theirs, unreadable))
    ]
    answer = orjson.dumps({"links": [{"token": link.token, "phone_number": ERASED}]})
    await db.execute(
        "INSERT INTO idempotency_keys (account_id, key, request_hash, status, response) "
        "VALUES ($1, 'k1', '\\x00', 201, $2)",
        account_id,
        answer,
    )
    await erasures.erase(db, account_id, ERASED)
    values = await db.fetch(
        "SELECT id, value FROM dead_events WHERE id = ANY($1::bigint[]) ORDER BY id", ids
    )
    assert [row["value"] for row in values] == [None, theirs, None]
    stored = await db.fetchval(
        "SELECT response FROM idempotency_keys WHERE account_id = $1 AND key = 'k1'", account_id
    )
    assert orjson.loads(stored) == {"links": [{"token": link.token, "phone_number": None}]}


async def test_outbox_rows_put_back_under_new_ids_during_the_scan_are_erased(
    db: asyncpg.Connection, account_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorder takes an endpoint's waiting rows out and puts them back under higher
    ids: rows that went between the erasure's read and its update are found again, and
    what was not updated is not counted."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")
    links = await number_links(db, account_id, 2)
    await record(db, events(clicks(links)), batch_size=100)  # both wait in the outbox
    real = erasures._update_rows
    moved = False

    async def recorder_first(conn: Connection, statement: str, changed: list[Any]) -> int:
        nonlocal moved
        if statement.startswith("UPDATE outbox") and not moved:
            moved = True  # as forwarder.recorder._batch does, by the same endpoint
            await conn.execute(
                """
                WITH taken AS (DELETE FROM outbox RETURNING endpoint_id, event_id, format,
                                                            detail, enqueued_at)
                INSERT INTO outbox (endpoint_id, event_id, format, detail, enqueued_at)
                SELECT endpoint_id, event_id, format, detail, enqueued_at FROM taken
                """
            )
        return await real(conn, statement, changed)

    monkeypatch.setattr(erasures, "_update_rows", recorder_first)
    done = await erasures.erase(db, account_id, ERASED)
    assert moved
    assert done.deliveries == 2  # the two rows, once each, under their new ids
    assert await number_left(db, account_id, ERASED) == []
