"""Telling every redirect worker that a link changed: PostgreSQL LISTEN/NOTIFY.

The API notifies channel `link_changes` with the token, in the transaction that
changes the link, so the notification goes out exactly when the change commits.
Each redirect worker keeps one connection listening and drops the token from its
cache: the next tap reads the new state. Notifications are delivered in
milliseconds. A worker that loses its listening connection may have missed some,
so after reconnecting it empties its whole cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence

import asyncpg

from shortlink.db import Connection

log = logging.getLogger(__name__)

CHANNEL = "link_changes"
_RETRY = 1.0


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()


async def notify(conn: Connection, tokens: Sequence[str]) -> None:
    """Announce changed links (delivered when the current transaction commits)."""
    if tokens:
        await conn.execute(
            "SELECT pg_notify($1, token) FROM unnest($2::text[]) AS token", CHANNEL, list(tokens)
        )


async def listen(
    database_url: str,
    invalidate: Callable[[str], None],
    clear: Callable[[], None],
    ready: asyncio.Event | None = None,
) -> None:
    """Keep a listening connection; call `invalidate(token)` per notification, and
    `clear()` after a reconnection (notifications may have been missed)."""
    first = True
    while True:
        try:
            conn = await asyncpg.connect(database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("cannot listen for link changes", extra={"error": repr(exc)})
            await asyncio.sleep(_RETRY)
            continue
        closed = asyncio.Event()

        def on_notify(_conn: object, _pid: int, _channel: str, token: object) -> None:
            invalidate(str(token))

        conn.add_termination_listener(functools.partial(_set, closed))
        try:
            await conn.add_listener(CHANNEL, on_notify)
            if not first:
                clear()  # what changed while we were away is unknown
                log.info("listening for link changes again; cache emptied")
            first = False
            if ready is not None:
                ready.set()
            await closed.wait()
            log.warning("lost the link-changes connection; reconnecting")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("link-changes connection failed", extra={"error": repr(exc)})
        finally:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.close(timeout=2)
        await asyncio.sleep(_RETRY)
