"""Idempotency-Key: a retried create answers the first answer and creates nothing again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from shortlink.api import idempotency
from shortlink.api.errors import ApiError, ValidationFailed
from shortlink.db import Connection
from shortlink.pool import POOL


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[web.Application]:
    """An application holding a pool of the session's database, as the API's has."""
    app = web.Application()
    app[POOL] = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield app
    await app[POOL].close()


class Creates:
    """An action that counts its runs and answers 201 with the run's number."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, conn: Connection) -> tuple[int, bytes]:
        self.runs += 1
        return 201, b'{"run": %d}' % self.runs


def request(app: web.Application, key: str | None) -> web.Request:
    headers = {} if key is None else {idempotency.HEADER: key}
    return make_mocked_request("POST", "/v1/links", headers=headers, app=app)


async def test_the_same_key_and_body_replay_the_first_answer(
    app: web.Application, account_id: int
) -> None:
    """The second request runs nothing and answers the stored status and body, marked replayed."""
    action = Creates()
    first = await idempotency.respond(request(app, "order-1"), account_id, b"{}", action)
    again = await idempotency.respond(request(app, "order-1"), account_id, b"{}", action)
    assert action.runs == 1
    assert (first.status, first.body) == (201, b'{"run": 1}')
    assert (again.status, again.body) == (201, b'{"run": 1}')
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_the_same_key_with_another_body_is_a_422(
    app: web.Application, account_id: int
) -> None:
    """A key reused for a different request is refused, not answered with the other's answer."""
    action = Creates()
    await idempotency.respond(request(app, "order-2"), account_id, b'{"a": 1}', action)
    with pytest.raises(ApiError) as refused:
        await idempotency.respond(request(app, "order-2"), account_id, b'{"a": 2}', action)
    assert (refused.value.status, refused.value.code) == (422, "idempotency_key_reused")
    assert action.runs == 1


async def test_keys_are_per_account_and_absent_keys_create_each_time(
    app: web.Application, account_id: int, db: asyncpg.Connection
) -> None:
    """Another account's same key is its own; without a key every request creates."""
    other = await db.fetchval("INSERT INTO accounts (name) VALUES ('other') RETURNING id")
    action = Creates()
    await idempotency.respond(request(app, "shared"), account_id, b"{}", action)
    await idempotency.respond(request(app, "shared"), other, b"{}", action)
    await idempotency.respond(request(app, None), account_id, b"{}", action)
    await idempotency.respond(request(app, None), account_id, b"{}", action)
    assert action.runs == 4


async def test_a_failed_create_leaves_the_key_free_for_the_retry(
    app: web.Application, account_id: int
) -> None:
    """The key row goes with the failed transaction: the retry runs and is stored."""

    async def fails(conn: Connection) -> tuple[int, bytes]:
        raise RuntimeError("the create failed")

    with pytest.raises(RuntimeError):
        await idempotency.respond(request(app, "order-3"), account_id, b"{}", fails)
    action = Creates()
    answer = await idempotency.respond(request(app, "order-3"), account_id, b"{}", action)
    assert (action.runs, answer.body) == (1, b'{"run": 1}')


@pytest.mark.parametrize("key", ["", " leading", "trailing ", "caf\u00e9", "x" * 256, "a\tb"])
async def test_a_key_that_is_not_visible_ascii_is_a_422(
    app: web.Application, account_id: int, key: str
) -> None:
    """1 to 255 visible ASCII characters (spaces only inside), else a validation error."""
    action = Creates()
    with pytest.raises(ValidationFailed):
        await idempotency.respond(request(app, key), account_id, b"{}", action)
    assert action.runs == 0
