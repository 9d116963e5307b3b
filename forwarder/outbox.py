"""The outbox: clicks waiting for a batch become deliveries.

The recorder leaves in `outbox` the clicks of a json or xml endpoint that do not
fill a batch yet, each with the format it was enqueued for. Here they become a
delivery when DELIVERY_BATCH_SIZE of them wait for one endpoint in one format, or
the oldest has waited DELIVERY_LINGER_MS. They are batched in that format even if
the endpoint has switched since: the clicks were chosen under its old settings,
and a clickthru event cannot carry a batch. Rows are claimed FOR UPDATE SKIP
LOCKED, so processes never batch a click twice.

A click that cannot be rendered (written by another version, say) must not hold
up the others or stop the loop: it becomes a dead letter of its own, holding the
stored click and the error, and the rest of its batch goes, one click per delivery.
Likewise, when PostgreSQL refuses to store a batch for anything but a named
transient failure, its clicks are stored one by one (as deliveries of one click, or
as dead letters holding the error); a click that cannot even be a dead letter stays
in the outbox, and its endpoint's waiting clicks are held back with backoff while
every other endpoint's go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from forwarder import formats
from forwarder.config import ForwarderConfig
from forwarder.lease import STEPS_PER_LEASE
from shortlink.db import Connection, is_statement_error, is_transient
from shortlink.deliveries import last_error_text
from shortlink.retry import Backoff

log = logging.getLogger(__name__)

# Waits before trying again to store the clicks of an endpoint that cannot be
# stored even as dead letters: 1 s doubling, at most 5 min (jittered).
_HOLD_BACK = Backoff(first=1.0, cap=300.0)


@dataclass(frozen=True)
class NewDelivery:
    """A delivery made from waiting clicks: a batch, or a click that cannot be rendered."""

    request_identifier: str
    body: bytes
    clicks: int
    oldest_click_at: datetime
    error: str | None = None  # set: a dead letter from the start


def render(format: str, rows: list[asyncpg.Record]) -> NewDelivery:
    """One delivery of these outbox rows in `format`, under a new RequestIdentifier."""
    request_id = str(uuid.uuid4())
    details = [formats.decode_detail(row["detail"]) for row in rows]
    return NewDelivery(
        request_id,
        formats.render(format, request_id, details),
        len(rows),
        min(row["enqueued_at"] for row in rows),
    )


def render_apart(format: str, rows: list[asyncpg.Record]) -> list[NewDelivery]:
    """A batch that could not be rendered, click by click: each click that renders is a
    delivery of its own (a batch of one is valid), each of the others a dead letter
    holding the stored click. Never raises, so a poison row cannot stop the loop."""
    made = []
    for row in rows:
        try:
            made.append(render(format, [row]))
        except Exception as exc:  # noqa: BLE001 - the error is kept with the dead letter
            made.append(
                NewDelivery(
                    str(uuid.uuid4()),
                    row["detail"],
                    1,
                    row["enqueued_at"],
                    last_error_text(f"cannot render this click as {format}: {exc!r}"),
                )
            )
    return made


class Outbox:
    """Turns waiting clicks into deliveries, for one forwarder process."""

    def __init__(
        self,
        config: ForwarderConfig,
        pool: asyncpg.Pool,
        *,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._pool = pool
        self._on_error = on_error  # an unexpected error, logged here, to be counted
        self._step = config.lease / STEPS_PER_LEASE  # bound of one transaction
        self.batches_made = 0
        self.unrenderable = 0  # clicks kept as dead letters
        self.stuck = 0  # clicks that could not even be stored as dead letters (still waiting)
        # (endpoint, format) whose clicks could not all be stored: failures in a row, and
        # the monotonic time before which they are not tried again.
        self._held: dict[tuple[int, str], tuple[int, float]] = {}

    async def make_batches(self) -> None:
        """Every batch that is due, endpoint by endpoint and format by format; what one
        endpoint's clicks do never holds up another's."""
        config = self._config
        async with asyncio.timeout(self._step):
            due = await self._pool.fetch(
                """
                SELECT o.endpoint_id, o.format FROM outbox o
                JOIN endpoints e ON e.id = o.endpoint_id
                WHERE e.enabled
                GROUP BY o.endpoint_id, o.format
                HAVING count(*) >= $1 OR min(o.enqueued_at) <= now() - $2::interval
                ORDER BY o.endpoint_id, o.format
                """,
                config.batch_size,
                timedelta(seconds=config.linger),
            )
        for row in due:
            key = (row["endpoint_id"], row["format"])
            held = self._held.get(key)
            if held is not None and time.monotonic() < held[1]:
                continue
            try:
                while await self._batch_one(*key):
                    pass
            except Exception as exc:
                if is_transient(exc) or is_statement_error(exc):
                    raise  # waited out by the delivery loop, or its supervisor's business
                await self._batch_apart(*key, exc)
            else:
                self._held.pop(key, None)

    async def _batch_one(self, endpoint_id: int, format: str) -> bool:
        """Turn up to one batch of clicks waiting in `format` into a delivery; True if
        a full one remains."""
        config = self._config
        async with (
            asyncio.timeout(self._step),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            rows = await conn.fetch(
                """
                SELECT id, detail, enqueued_at FROM outbox
                WHERE endpoint_id = $1 AND format = $2 ORDER BY id LIMIT $3
                FOR UPDATE SKIP LOCKED
                """,
                endpoint_id,
                format,
                config.batch_size,
            )
            if not rows:
                return False
            if len(rows) < config.batch_size:
                oldest = min(row["enqueued_at"] for row in rows)
                waited = await conn.fetchval("SELECT now() - $1::timestamptz", oldest)
                if waited < timedelta(seconds=config.linger):
                    return False
            try:
                made = [render(format, rows)]
            except Exception:  # one bad click must not hold up the others
                log.exception(
                    "cannot render a batch; rendering its clicks one by one",
                    extra={"endpoint_id": endpoint_id, "format": format, "clicks": len(rows)},
                )
                self._on_error()
                made = render_apart(format, rows)
            await _store(conn, endpoint_id, format, made, [row["id"] for row in rows])
        self.batches_made += 1
        self.unrenderable += sum(1 for m in made if m.error is not None)
        return len(rows) == config.batch_size

    async def _batch_apart(self, endpoint_id: int, format: str, error: Exception) -> None:
        """PostgreSQL refused a batch of waiting clicks: store them one by one, as
        deliveries of one click or else as dead letters holding the error; hold the
        endpoint's clicks back for a while if one cannot be stored at all."""
        log.error(
            "cannot store a batch of waiting clicks; storing them one by one",
            exc_info=error,
            extra={"endpoint_id": endpoint_id, "format": format},
        )
        self._on_error()
        async with asyncio.timeout(self._step):
            ids = await self._pool.fetch(
                "SELECT id FROM outbox WHERE endpoint_id = $1 AND format = $2 ORDER BY id LIMIT $3",
                endpoint_id,
                format,
                self._config.batch_size,
            )
        stuck = 0
        for row in ids:
            if not await self._store_one(endpoint_id, format, row["id"]):
                stuck += 1
        self.stuck += stuck
        key = (endpoint_id, format)
        if not stuck:
            self._held.pop(key, None)
            return
        failures = self._held.get(key, (0, 0.0))[0] + 1
        delay = _HOLD_BACK.delay(failures)
        self._held[key] = (failures, time.monotonic() + delay)
        log.error(
            "waiting clicks cannot be stored even as dead letters; holding them back",
            extra={"endpoint_id": endpoint_id, "clicks": stuck, "retry_in": round(delay, 1)},
        )

    async def _store_one(self, endpoint_id: int, format: str, outbox_id: int) -> bool:
        """One waiting click as a delivery of its own, or else a dead letter; False if
        PostgreSQL refuses both (the click stays in the outbox)."""
        refused: Exception | None = None
        for as_dead_letter in (False, True):
            try:
                async with (
                    asyncio.timeout(self._step),
                    self._pool.acquire() as conn,
                    conn.transaction(),
                ):
                    rows = await conn.fetch(
                        """
                        SELECT id, detail, enqueued_at FROM outbox WHERE id = $1
                        FOR UPDATE SKIP LOCKED
                        """,
                        outbox_id,
                    )
                    if not rows:  # taken by another process meanwhile
                        return True
                    [made] = render_apart(format, rows)
                    if as_dead_letter and made.error is None:
                        # Rendered, so `shortlink deliveries retry` can send it after a fix.
                        made = NewDelivery(
                            made.request_identifier,
                            made.body,
                            1,
                            made.oldest_click_at,
                            last_error_text(f"cannot be stored as a delivery: {refused!r}"),
                        )
                    await _store(conn, endpoint_id, format, [made], [outbox_id])
                self.batches_made += 1
                self.unrenderable += made.error is not None
                return True
            except Exception as exc:
                if is_transient(exc) or is_statement_error(exc):
                    raise
                refused = exc
        return False


async def _store(
    conn: Connection,
    endpoint_id: int,
    format: str,
    made: list[NewDelivery],
    outbox_ids: list[int],
) -> None:
    """Insert the deliveries made from waiting clicks and take the clicks out of the outbox."""
    await conn.executemany(
        """
        INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                oldest_click_at, status, last_error)
        VALUES ($1, $2, $3, $4, $5, $6,
                CASE WHEN $7::text IS NULL THEN 'pending' ELSE 'dead' END, $7)
        """,
        [
            (
                m.request_identifier,
                endpoint_id,
                format,
                m.body,
                m.clicks,
                m.oldest_click_at,
                m.error,
            )
            for m in made
        ],
    )
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", outbox_ids)
