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
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from forwarder import formats
from forwarder.config import ForwarderConfig
from forwarder.lease import STEPS_PER_LEASE
from shortlink.deliveries import last_error_text

log = logging.getLogger(__name__)


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

    async def make_batches(self) -> None:
        """Every batch that is due, endpoint by endpoint and format by format."""
        config = self._config
        async with asyncio.timeout(self._step):
            due = await self._pool.fetch(
                """
                SELECT o.endpoint_id, o.format FROM outbox o
                JOIN endpoints e ON e.id = o.endpoint_id
                WHERE e.enabled
                GROUP BY o.endpoint_id, o.format
                HAVING count(*) >= $1 OR min(o.enqueued_at) <= now() - $2::interval
                """,
                config.batch_size,
                timedelta(seconds=config.linger),
            )
        for row in due:
            while await self._batch_one(row["endpoint_id"], row["format"]):
                pass

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
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
            )
        self.batches_made += 1
        self.unrenderable += sum(1 for m in made if m.error is not None)
        return len(rows) == config.batch_size
