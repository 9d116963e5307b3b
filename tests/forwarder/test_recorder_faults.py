"""What the recorder does with data it cannot record and with a database that fails over."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from forwarder.app import RECORDER
from forwarder.config import ForwarderConfig
from forwarder.recorder import Received, Recorder, record
from shortlink import clickevent
from shortlink.db import is_transient
from tests.forwarder.conftest import clicks, make_links, publish
from tests.infra import RunningServer, wait_until


async def test_an_event_postgresql_refuses_is_kept_apart_and_the_rest_is_recorded(
    forwarder: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A click whose time PostgreSQL cannot store goes to dead_events with the reason; the
    other clicks of its batch and every later one are recorded."""
    links = await make_links(db, account_id, 6)
    good = clicks(links[:5])
    [(token, value)] = clicks(links[5:])
    event = clickevent.decode(value)
    poison = clickevent.encode(
        event.event_id,
        (*event[1:9], 10**17, *event[10:]),  # clicked in the year three million
    )
    await publish(kafka_bootstrap, click_topic, [*good[:3], (token, poison), *good[3:]])
    await wait_until(
        lambda: forwarder.app[RECORDER].totals.recorded == 5 and forwarder.app[RECORDER].dead == 1
    )
    dead = await db.fetch("SELECT value, error FROM dead_events WHERE topic = $1", click_topic)
    assert [row["value"] for row in dead] == [poison]
    assert "refused" in dead[0]["error"]
    later = clicks(links[:1])
    await publish(kafka_bootstrap, click_topic, later)
    await wait_until(lambda: forwarder.app[RECORDER].totals.recorded == 6)


async def test_a_message_that_is_not_a_click_event_is_kept_in_dead_events(
    forwarder: RunningServer, db: asyncpg.Connection, kafka_bootstrap: str, click_topic: str
) -> None:
    """Garbage on the click topic is stored with why, not dropped, and consuming goes on."""
    await publish(kafka_bootstrap, click_topic, [("Garbag1", b"not an event")])
    await wait_until(lambda: forwarder.app[RECORDER].invalid == 1)

    async def kept() -> list[asyncpg.Record]:
        return await db.fetch("SELECT value, error FROM dead_events WHERE topic = $1", click_topic)

    for _ in range(100):
        if await kept():
            break
        await asyncio.sleep(0.05)
    [row] = await kept()
    assert row["value"] == b"not an event"
    assert row["error"].startswith("not a click event")


async def test_nul_in_a_user_agent_is_recorded_as_a_replacement_character(
    db: asyncpg.Connection, account_id: int
) -> None:
    """A NUL a client sent (PostgreSQL text cannot hold one) becomes U+FFFD; the click is kept."""
    [link] = await make_links(db, account_id, 1)
    [(_, value)] = clicks([link], user_agent="Mozilla/5.0 \x00 evil")
    event = clickevent.decode(value)
    outcome = await record(db, [event], batch_size=100)
    assert outcome.recorded == 1
    agent = await db.fetchval("SELECT user_agent FROM clicks WHERE event_id = $1", event.event_id)
    assert agent == "Mozilla/5.0 \ufffd evil"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (asyncpg.AdminShutdownError, True),
        (asyncpg.CrashShutdownError, True),
        (asyncpg.TooManyConnectionsError, True),
        (asyncpg.QueryCanceledError, True),
        (asyncpg.ReadOnlySQLTransactionError, True),
        (asyncpg.CannotConnectNowError, True),
        (asyncpg.DeadlockDetectedError, True),
        (asyncpg.ConnectionDoesNotExistError, True),
        (asyncpg.UniqueViolationError, False),
        (asyncpg.DataError, False),
        (asyncpg.UndefinedColumnError, False),
    ],
)
def test_which_database_errors_are_worth_retrying(error: type[Exception], transient: bool) -> None:
    """Restarts, failovers, overload and cancellations are transient; data and schema errors not."""
    assert is_transient(error("x")) is transient


async def test_a_failover_to_a_read_only_server_is_waited_out(
    forwarder_env: dict[str, str],
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While writes fail as read-only, the batch is retried on fresh connections; once the
    server takes writes again it is recorded, once."""
    read_only = {"on": True}

    async def init(conn: asyncpg.Connection) -> None:
        setting = "on" if read_only["on"] else "off"
        await conn.execute(f"SET default_transaction_read_only = {setting}")

    links = await make_links(db, account_id, 3)
    batch = [clickevent.decode(value) for _, value in clicks(links)]
    received = [Received(event, b"", ("t", 0, n)) for n, event in enumerate(batch)]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=init)
    try:
        recorder = Recorder(ForwarderConfig.from_env(forwarder_env), pool, lambda: None)
        caplog.set_level(logging.WARNING, logger="forwarder.recorder")
        attempt = asyncio.ensure_future(recorder._record_with_retries(received))
        await wait_until(
            lambda: any(
                "ReadOnlySQLTransaction" in str(getattr(r, "error", "")) for r in caplog.records
            ),
            within=10,
        )
        assert not attempt.done()
        read_only["on"] = False  # the new primary
        outcome = await asyncio.wait_for(attempt, 30)
    finally:
        await pool.close()
    assert outcome.recorded == 3
    assert (
        await db.fetchval(
            "SELECT count(*) FROM clicks WHERE event_id = ANY($1::uuid[])",
            [e.event_id for e in batch],
        )
        == 3
    )
