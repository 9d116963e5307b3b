"""The health-check answers every service gives on /healthz and /readyz."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import orjson
import pytest

from shortlink import health
from shortlink.supervise import Supervisor


def test_an_answer_is_uncached_json_with_200_or_503() -> None:
    """answer() sends the body as compact JSON, never cached, 200 when ok and 503 when not."""
    ok = health.answer({"database": "ok"}, True)
    assert ok.status == 200
    assert ok.content_type == "application/json"
    assert ok.headers["Cache-Control"] == "no-store"
    assert ok.body == b'{"database":"ok"}'
    assert health.answer({"database": "unreachable"}, False).status == 503


def test_liveness_names_the_task_that_could_not_recover() -> None:
    """/healthz is 200 "ok" until a task fails for good, then 503 with the task's name."""
    supervisor = Supervisor("test")
    alive = health.liveness(supervisor)
    assert (alive.status, orjson.loads(cast(bytes, alive.body))) == (200, {"status": "ok"})
    supervisor.fail("flusher")
    failing = health.liveness(supervisor)
    assert failing.status == 503
    assert orjson.loads(cast(bytes, failing.body)) == {
        "status": "failing",
        "failed_task": "flusher",
    }


def test_a_check_is_ok_or_says_what_is_wrong() -> None:
    """state() gives "ok", or "unreachable" unless the check names its own failure."""
    assert health.state(True) == "ok"
    assert health.state(False) == "unreachable"
    assert health.state(False, "not started") == "not started"


class _Pool:
    """Stands in for a pool whose server fails or never answers."""

    def __init__(self, answer: Any) -> None:
        self._answer = answer

    async def fetchval(self, query: str) -> Any:
        if isinstance(self._answer, BaseException):
            raise self._answer
        if self._answer is None:
            await asyncio.Event().wait()
        return self._answer


async def test_the_database_is_reachable_only_if_it_answers_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database that answers is reachable; one that fails or does not answer in time is not."""
    monkeypatch.setattr(health, "DATABASE_TIMEOUT", 0.01)
    assert await health.database_reachable(cast(asyncpg.Pool, _Pool(1)))
    assert not await health.database_reachable(cast(asyncpg.Pool, _Pool(OSError("refused"))))
    assert not await health.database_reachable(cast(asyncpg.Pool, _Pool(None)))
