"""A customer endpoint that tests run (it records every POST and answers as told), and the
wait until the forwarder has nothing left to send it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from forwarder.app import DELIVERER, RECORDER
from shortlink.endpoints import set_endpoint as store
from tests.infra import RunningServer, wait_until


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Sink:
    """A customer endpoint: records every POST and answers as the test says."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    # Statuses to answer in order; then `status`. A float is a delay before answering 200.
    script: list[int | float] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received(time.monotonic(), dict(request.headers), await request.read())
        )
        step: int | float = self.script.pop(0) if self.script else self.status
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = 200
        return web.Response(status=step, headers=self.headers)


async def set_endpoint(db: asyncpg.Connection, account_id: int, url: str, **options: object) -> int:
    """Point the account's endpoint at `url` (private addresses allowed: the sink is local);
    its id."""
    await store(
        db,
        account_id,
        url=url,
        format=str(options.get("format", "json")),
        mode=str(options.get("mode", "every")),
        secret=options.get("secret"),  # type: ignore[arg-type]
        enabled=True,
        allow_private=True,
        conversions=bool(options.get("conversions", False)),
    )
    found: int = await db.fetchval("SELECT id FROM endpoints WHERE account_id = $1", account_id)
    return found


async def settled(
    forwarder: RunningServer, db: asyncpg.Connection, account_id: int, *, received: int = 0
) -> None:
    """Wait until the forwarder has read `received` click events and holds no click of the
    account (its callbacks included) waiting for a batch, and no delivery of it pending or in
    flight: from then on it sends the account nothing unless something new happens, so a test
    may check that nothing more arrived. (An endpoint disabled with work left never settles.)"""
    recorder, deliverer = forwarder.app[RECORDER], forwarder.app[DELIVERER]
    await wait_until(lambda: recorder.totals.received >= received, what="events read")

    async def idle() -> bool:
        waiting = await db.fetchval(
            """
            SELECT (SELECT count(*) FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id
                    WHERE e.account_id = $1 OR e.callback_account_id = $1)
                 + (SELECT count(*) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                    WHERE (e.account_id = $1 OR e.callback_account_id = $1)
                      AND d.status = 'pending')
            """,
            account_id,
        )
        return waiting == 0 and deliverer.in_flight == 0

    await wait_until(idle, what="no click of the account waiting, no delivery pending or in flight")
