"""The outbox, against the real database: waiting clicks become deliveries when a batch is
full or the oldest has waited the linger, in the format they were enqueued for."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from forwarder import formats
from forwarder.config import ForwarderConfig
from forwarder.outbox import Outbox, render, render_apart
from shortlink.pool import open_pool
from tests.forwarder.endpoint import set_endpoint
from tests.forwarder.test_formats import SEED_DETAIL

UNREADABLE = b'{"TrackingUrlId": 7}'  # written by some other version: fields missing


@pytest.fixture
async def outbox(forwarder_env: dict[str, str]) -> AsyncIterator[Outbox]:
    """An outbox of batches of 100 with a linger of a minute: only age set by a test is due."""
    env = {**forwarder_env, "DELIVERY_LINGER_MS": "60000"}
    config = ForwarderConfig.from_env(env)
    async with open_pool(config.service) as pool:
        yield Outbox(config, pool)


@pytest.fixture
async def endpoint(db: asyncpg.Connection, account_id: int) -> int:
    """The id of a json endpoint of a fresh account."""
    return await set_endpoint(db, account_id, "http://127.0.0.1:9/hook")


async def wait(
    db: asyncpg.Connection,
    endpoint_id: int,
    count: int,
    *,
    format: str = "json",
    age: timedelta = timedelta(0),
    detail: bytes | None = None,
) -> None:
    """`count` clicks waiting for the endpoint in `format`, enqueued `age` ago."""
    stored = formats.encode_detail(SEED_DETAIL) if detail is None else detail
    await db.executemany(
        """
        INSERT INTO outbox (endpoint_id, format, event_id, detail, enqueued_at)
        VALUES ($1, $2, $3, $4, now() - $5::interval)
        """,
        [(endpoint_id, format, uuid.uuid4(), stored, age) for _ in range(count)],
    )


async def deliveries(db: asyncpg.Connection, endpoint_id: int) -> list[asyncpg.Record]:
    """The endpoint's deliveries, oldest first."""
    return await db.fetch(
        """
        SELECT format, clicks, status, body, last_error FROM deliveries
        WHERE endpoint_id = $1 ORDER BY created_at, clicks DESC
        """,
        endpoint_id,
    )


async def waiting(db: asyncpg.Connection, endpoint_id: int) -> int:
    """How many clicks still wait for the endpoint."""
    return int(await db.fetchval("SELECT count(*) FROM outbox WHERE endpoint_id = $1", endpoint_id))


async def test_a_full_batch_goes_and_the_rest_waits_for_the_linger(
    outbox: Outbox, db: asyncpg.Connection, endpoint: int
) -> None:
    """250 fresh clicks: two deliveries of 100 at once, 50 left waiting for the linger."""
    await wait(db, endpoint, 250)
    await outbox.make_batches()
    rows = await deliveries(db, endpoint)
    assert [(r["format"], r["clicks"], r["status"]) for r in rows] == [("json", 100, "pending")] * 2
    assert await waiting(db, endpoint) == 50
    assert outbox.batches_made == 2
    for row in rows:
        body = orjson.loads(row["body"])
        assert len(body["ClickDetails"]) == 100
        assert uuid.UUID(body["RequestIdentifier"])


async def test_clicks_that_waited_the_linger_go_as_a_short_batch(
    outbox: Outbox, db: asyncpg.Connection, endpoint: int
) -> None:
    """Fewer clicks than a batch go once the oldest has waited DELIVERY_LINGER_MS."""
    await wait(db, endpoint, 2)
    await outbox.make_batches()
    assert await deliveries(db, endpoint) == []
    await wait(db, endpoint, 1, age=timedelta(minutes=2))
    await outbox.make_batches()
    [row] = await deliveries(db, endpoint)
    assert (row["clicks"], row["status"]) == (3, "pending")
    assert await waiting(db, endpoint) == 0


async def test_clicks_are_batched_in_the_format_they_were_enqueued_for(
    outbox: Outbox, db: asyncpg.Connection, endpoint: int
) -> None:
    """After a switch from xml to json, the clicks waiting as xml become one XML delivery
    and the new ones a JSON one: a batch never mixes formats."""
    await wait(db, endpoint, 2, format="xml", age=timedelta(minutes=2))
    await wait(db, endpoint, 1, format="json", age=timedelta(minutes=2))
    await outbox.make_batches()
    rows = await deliveries(db, endpoint)
    assert sorted((r["format"], r["clicks"]) for r in rows) == [("json", 1), ("xml", 2)]
    [xml] = [r for r in rows if r["format"] == "xml"]
    assert xml["body"].startswith(b"<?xml")


async def test_a_disabled_endpoints_clicks_wait(
    outbox: Outbox, db: asyncpg.Connection, endpoint: int
) -> None:
    """Clicks of a disabled endpoint are not batched, however long they have waited."""
    await wait(db, endpoint, 3, age=timedelta(minutes=2))
    await db.execute("UPDATE endpoints SET enabled = false WHERE id = $1", endpoint)
    await outbox.make_batches()
    assert await deliveries(db, endpoint) == []
    assert await waiting(db, endpoint) == 3


async def test_a_click_that_cannot_be_rendered_is_a_dead_letter_and_the_rest_go_alone(
    outbox: Outbox, db: asyncpg.Connection, endpoint: int
) -> None:
    """A batch holding an unreadable click: that click is a dead letter holding the stored
    detail and the error; each of the others a delivery of one click."""
    await wait(db, endpoint, 2, age=timedelta(minutes=2))
    await wait(db, endpoint, 1, age=timedelta(minutes=2), detail=UNREADABLE)
    await outbox.make_batches()
    rows = await deliveries(db, endpoint)
    assert sorted((r["clicks"], r["status"]) for r in rows) == [
        (1, "dead"),
        (1, "pending"),
        (1, "pending"),
    ]
    [dead] = [r for r in rows if r["status"] == "dead"]
    assert dead["body"] == UNREADABLE
    assert dead["last_error"].startswith("cannot render this click as json: KeyError(")
    assert (outbox.unrenderable, outbox.stuck) == (1, 0)
    assert await waiting(db, endpoint) == 0


def test_render_makes_one_delivery_under_a_new_request_identifier() -> None:
    """render: every row's detail in one body, named by a fresh RequestIdentifier, counted,
    dated by the oldest row."""
    rows = [
        {
            "detail": formats.encode_detail(SEED_DETAIL),
            "enqueued_at": datetime(2026, 1, d, tzinfo=UTC),
        }
        for d in (3, 1, 2)
    ]
    made = render("json", rows)  # type: ignore[arg-type]
    again = render("json", rows)  # type: ignore[arg-type]
    assert made.request_identifier != again.request_identifier
    body = orjson.loads(made.body)
    assert body["RequestIdentifier"] == made.request_identifier
    assert len(body["ClickDetails"]) == 3
    assert (made.clicks, made.oldest_click_at, made.error) == (3, rows[1]["enqueued_at"], None)


def test_render_apart_never_raises() -> None:
    """render_apart: a delivery per renderable click, a dead letter per unreadable one."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"detail": formats.encode_detail(SEED_DETAIL), "enqueued_at": at},
        {"detail": b"\xff not json", "enqueued_at": at},
    ]
    good, bad = render_apart("xml", rows)  # type: ignore[arg-type]
    assert (good.clicks, good.error) == (1, None)
    assert good.body.startswith(b"<?xml")
    assert bad.body == b"\xff not json"
    assert bad.error is not None
    assert bad.error.startswith("cannot render this click as xml: ")
