"""Health checks: the /healthz and /readyz answers of every service, made in one place.

- **Liveness** (`/healthz`): 200 unless a supervised background task could not
  recover (shortlink.supervise), then 503 and the task's name: the orchestrator
  replaces the process.
- **Readiness** (`/readyz`): 200 when what the service needs answers, else 503,
  with one entry per check. Each service names its checks (the redirect server:
  the database and the broker; the API: the database; the forwarder: the database
  and its Kafka consumer); the database check is the same for all.

Answers are compact JSON, never cached (`Cache-Control: no-store`): a probe must
see the state of now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import asyncpg
import orjson
from aiohttp import web

from shortlink.supervise import SUPERVISOR, Supervisor

DATABASE_TIMEOUT = 1.0  # seconds the database has to answer a readiness check


def answer(body: Mapping[str, object], ok: bool) -> web.Response:
    """A probe's answer: `body` as JSON, 200 if `ok`, else 503."""
    return web.Response(
        status=200 if ok else 503,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def liveness(supervisor: Supervisor) -> web.Response:
    """Alive unless a background task could not recover (the process should be replaced)."""
    return answer(supervisor.health(), supervisor.healthy)


async def healthz(request: web.Request) -> web.Response:
    """The /healthz handler of an app with a Supervisor (shortlink.supervise)."""
    return liveness(request.app[SUPERVISOR])


async def database_reachable(pool: asyncpg.Pool) -> bool:
    """Whether the database answers a trivial query within DATABASE_TIMEOUT seconds."""
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            await pool.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False
    return True


def state(ok: bool, failing: str = "unreachable") -> str:
    """How a readiness body names one check: "ok", or what is wrong."""
    return "ok" if ok else failing
