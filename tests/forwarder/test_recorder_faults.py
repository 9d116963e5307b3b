"""What the recorder does with data it cannot record and with a database that fails over."""

from __future__ import annotations

import asyncio
import logging
import random
import string
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from forwarder.app import RECORDER
from forwarder.config import ForwarderConfig
from forwarder.enrich import MAX_NAME
from forwarder.recorder import Received, Recorder, record
from shortlink import clickevent
from shortlink.geoip import PACKAGED, Locator, Place
from shortlink.supervise import SUPERVISOR
from tests.clicks import clicks, make_links, publish
from tests.forwarder.endpoint import set_endpoint
from tests.infra import RunningServer, unique_name, wait_until


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


async def test_a_click_dated_outside_every_partition_is_kept_apart(
    forwarder: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A click dated years ahead (a redirect server whose clock is wrong) has no clicks
    partition: it goes to dead_events with the reason; the rest of its batch is recorded."""
    links = await make_links(db, account_id, 4)
    good = clicks(links[:3])
    [(token, value)] = clicks(links[3:])
    event = clickevent.decode(value)
    ahead = clickevent.encode(
        event.event_id,
        (*event[1:9], event.clicked_at_ms + 10 * 365 * 86_400_000, *event[10:]),
    )
    await publish(kafka_bootstrap, click_topic, [*good[:2], (token, ahead), *good[2:]])
    await wait_until(
        lambda: forwarder.app[RECORDER].totals.recorded == 3 and forwarder.app[RECORDER].dead == 1
    )
    [dead] = await db.fetch("SELECT value, error FROM dead_events WHERE topic = $1", click_topic)
    assert dead["value"] == ahead
    assert "partition" in dead["error"]


async def test_a_message_that_is_not_a_click_event_is_kept_in_dead_events(
    forwarder: RunningServer, db: asyncpg.Connection, kafka_bootstrap: str, click_topic: str
) -> None:
    """Garbage on the click topic is stored with why, not dropped, and consuming goes on."""
    await publish(kafka_bootstrap, click_topic, [("Garbag1", b"not an event")])
    await wait_until(lambda: forwarder.app[RECORDER].invalid == 1)

    async def kept() -> list[asyncpg.Record]:
        return await db.fetch("SELECT value, error FROM dead_events WHERE topic = $1", click_topic)

    await wait_until(kept, what="the message kept in dead_events")
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


# -- poison events: whatever one event does, the rest of its batch is recorded (issue 21)

CFNETWORK = "/1.0 CFNetwork/1240.0.4 Darwin/20.6.0"


def random_letters(count: int, seed: int) -> str:
    """`count` ASCII letters, the same for the same seed."""
    return "".join(random.Random(seed).choices(string.ascii_letters, k=count))


def received_of(values: list[tuple[str, bytes]]) -> list[Received]:
    """The events of encoded clicks, as the consumer hands them to the recorder."""
    return [
        Received(clickevent.decode(value), value, ("t", 0, offset))
        for offset, (_, value) in enumerate(values)
    ]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the session's database."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def poison_trigger(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A trigger on clicks that makes PostgreSQL raise 54000 (program limit exceeded) for
    one user agent, as an index row too large does; removed after the test."""
    agent = f"poison-54000-{uuid.uuid4().hex}"
    await db.execute(
        f"""
        CREATE FUNCTION test_poison_54000() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_agent = '{agent}' THEN
                RAISE EXCEPTION 'index row size 3040 exceeds btree version 4 maximum 2704'
                    USING ERRCODE = '54000';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_poison_54000 BEFORE INSERT ON clicks
            FOR EACH ROW EXECUTE FUNCTION test_poison_54000();
        """
    )
    yield agent
    await db.execute("DROP TRIGGER test_poison_54000 ON clicks; DROP FUNCTION test_poison_54000();")


async def test_a_tap_whose_user_agent_names_a_huge_browser_is_recorded(
    forwarder: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """The issue's tap (3,000 random letters before CFNetwork) and one whose browser name
    is 700 letters are recorded with their texts cut, with their batch; nothing dies and
    nothing goes to dead_events."""
    links = await make_links(db, account_id, 5)
    huge = random_letters(3000, 1) + CFNETWORK
    long = random_letters(700, 2) + CFNETWORK
    values = [*clicks(links[:2]), *clicks(links[2:3], user_agent=huge)]
    values += [*clicks(links[3:4], user_agent=long), *clicks(links[4:])]
    await publish(kafka_bootstrap, click_topic, values)
    recorder = forwarder.app[RECORDER]
    await wait_until(lambda: recorder.totals.recorded == 5)
    assert recorder.dead == 0
    assert forwarder.app[SUPERVISOR].healthy
    rows = {
        row["link_id"]: row
        for row in await db.fetch(
            "SELECT link_id, user_agent, browser, os FROM clicks WHERE link_id = ANY($1::bigint[])",
            [links[2].id, links[3].id],
        )
    }
    assert rows[links[2].id]["user_agent"] == huge[: clickevent.MAX_USER_AGENT]
    assert rows[links[3].id]["user_agent"] == long
    assert rows[links[3].id]["browser"] == long[:MAX_NAME]
    assert rows[links[3].id]["os"] == "iOS"


async def test_an_event_postgresql_refuses_with_54000_goes_to_dead_events_alone(
    forwarder_env: dict[str, str],
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    account_id: int,
    poison_trigger: str,
) -> None:
    """A program-limit error (54000, not a data class) is narrowed to its event by
    bisection: that event is dead, the other 15 of the batch are recorded."""
    links = await make_links(db, account_id, 16)
    values = [*clicks(links[:11]), *clicks(links[11:12], user_agent=poison_trigger)]
    values += clicks(links[12:])
    recorder = Recorder(ForwarderConfig.from_env(forwarder_env), pool, lambda: None)
    outcome = await recorder._record_with_retries(received_of(values))
    assert (outcome.received, outcome.recorded, recorder.dead) == (16, 15, 1)
    assert recorder.isolations == 1
    [dead] = await db.fetch("SELECT value, error FROM dead_events WHERE value = $1", values[11][1])
    assert dead["error"].startswith("refused by PostgreSQL (54000)")
    recorded = await db.fetchval(
        "SELECT count(*) FROM clicks WHERE link_id = ANY($1::bigint[])", [ln.id for ln in links]
    )
    assert recorded == 15


async def test_a_check_violation_in_the_statistics_keeps_only_its_event_apart(
    forwarder_env: dict[str, str],
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    account_id: int,
) -> None:
    """A CHECK that a statement after the click insert violates (the campaign
    breakdown) rolls back only that event's attempt: it is dead, the rest counted."""
    browser = f"Poison{uuid.uuid4().hex[:8]}"
    await db.execute(
        f"ALTER TABLE campaign_breakdown ADD CONSTRAINT test_poison CHECK (value <> '{browser}')"
        " NOT VALID"
    )
    try:
        links = await make_links(db, account_id, 5, client_identifier=unique_name("camp"))
        values = [*clicks(links[:2]), *clicks(links[2:3], user_agent=browser + CFNETWORK)]
        values += clicks(links[3:])
        recorder = Recorder(ForwarderConfig.from_env(forwarder_env), pool, lambda: None)
        outcome = await recorder._record_with_retries(received_of(values))
    finally:
        await db.execute("ALTER TABLE campaign_breakdown DROP CONSTRAINT test_poison")
    assert (outcome.recorded, recorder.dead) == (4, 1)
    [dead] = await db.fetch("SELECT error FROM dead_events WHERE value = $1", values[2][1])
    assert dead["error"].startswith("refused by PostgreSQL (23514)")
    assert not await db.fetchval("SELECT count(*) FROM clicks WHERE link_id = $1", links[2].id)
    total = await db.fetchval(
        "SELECT total_clicks FROM campaign_stats WHERE account_id = $1 AND campaign = $2",
        account_id,
        links[0].client_identifier,
    )
    assert total == 4


class FailingLocator(Locator):
    """Enrichment with a bug: looking up one address raises."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.locate = self._fail_for(address)  # type: ignore[method-assign]

    def _fail_for(self, address: str) -> Callable[[str | None], Place]:
        def locate(value: str | None) -> Place:
            if value == address:
                raise KeyError(f"no place for {value}")
            return PACKAGED.locate(value)

        return locate


async def test_an_event_whose_enrichment_raises_goes_to_dead_events_alone(
    forwarder_env: dict[str, str],
    pool: asyncpg.Pool,
    db: asyncpg.Connection,
    account_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Python exception while enriching one event does not stop recording: that event
    is dead with the error and its traceback logged, the others are recorded."""
    links = await make_links(db, account_id, 8)
    values = [*clicks(links[:5]), *clicks(links[5:6], ip="198.51.100.66"), *clicks(links[6:])]
    recorder = Recorder(
        ForwarderConfig.from_env(forwarder_env),
        pool,
        lambda: None,
        FailingLocator("198.51.100.66"),
    )
    outcome = await recorder._record_with_retries(received_of(values))
    assert (outcome.recorded, recorder.dead) == (7, 1)
    [dead] = await db.fetch("SELECT error FROM dead_events WHERE value = $1", values[5][1])
    assert dead["error"] == "cannot be recorded: KeyError('no place for 198.51.100.66')"
    [logged] = [r for r in caplog.records if "dead_events" in r.getMessage()]
    assert logged.exc_info is not None


async def test_a_statement_error_is_not_blamed_on_the_events(
    forwarder_env: dict[str, str], empty_database_url: str, db: asyncpg.Connection, account_id: int
) -> None:
    """An error that says the schema is wrong (no clicks table: a migration missing) fails
    the task for the supervisor; no event is set apart for it."""
    links = await make_links(db, account_id, 2)
    pool = await asyncpg.create_pool(empty_database_url, min_size=1, max_size=1)
    try:
        recorder = Recorder(ForwarderConfig.from_env(forwarder_env), pool, lambda: None)
        with pytest.raises(asyncpg.UndefinedTableError):
            await recorder._record_with_retries(received_of(clicks(links)))
    finally:
        await pool.close()
    assert (recorder.dead, recorder.isolations) == (0, 0)


async def test_a_waiting_click_this_version_cannot_render_does_not_stop_recording(
    forwarder_env: dict[str, str], pool: asyncpg.Pool, db: asyncpg.Connection, account_id: int
) -> None:
    """A click in the outbox written by another version (a detail this one cannot read)
    goes back to the outbox as it was; the new clicks are recorded and batched, none dead."""
    await set_endpoint(db, account_id, "http://127.0.0.1:9/hook", format="json")
    endpoint = await db.fetchval("SELECT id FROM endpoints WHERE account_id = $1", account_id)
    old_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO outbox (endpoint_id, event_id, detail, format) VALUES ($1, $2, $3, 'json')",
        endpoint,
        old_id,
        b'{"Old":1}',
    )
    links = await make_links(db, account_id, 8)
    values = clicks(links)
    config = ForwarderConfig.from_env({**forwarder_env, "DELIVERY_BATCH_SIZE": "2"})
    recorder = Recorder(config, pool, lambda: None)
    outcome = await recorder._record_with_retries(received_of(values))
    assert (outcome.recorded, recorder.dead, recorder.isolations) == (8, 0, 0)
    batched = await db.fetchval(
        "SELECT sum(clicks) FROM deliveries WHERE endpoint_id = $1", endpoint
    )
    waiting = {
        str(row["event_id"]): row["detail"]
        for row in await db.fetch(
            "SELECT event_id, detail FROM outbox WHERE endpoint_id = $1", endpoint
        )
    }
    assert waiting.pop(old_id) == b'{"Old":1}'
    assert batched + len(waiting) == 8
    assert batched >= 6
