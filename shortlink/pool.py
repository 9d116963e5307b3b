"""The PostgreSQL connection pools of a service and their lifecycle.

POOL leads to the primary: everything that writes, and every read that must see the
latest write (an API key, a dashboard session, a link). READ_POOL serves the reads
that may lag a little: campaign statistics, click listings, the dashboard's figures
and charts, the CSV exports. With DATABASE_READ_URL it leads to a streaming replica,
so those pages never load the primary that records clicks; without it, it is POOL.

`promptly` runs one short piece of work on a pool within a bound, for checks that must
not wait on a server that has gone silent (a host cut off answers nothing, and a
statement on it would wait for the 60 s command timeout).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from shortlink.config import ServiceConfig
from shortlink.db import Connection, needs_new_connections, require_database_url
from shortlink.schema import check_schema

POOL = web.AppKey("pool", asyncpg.Pool)
READ_POOL = web.AppKey("read_pool", asyncpg.Pool)

T = TypeVar("T")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset on release: for pools whose users never change session state."""


@asynccontextmanager
async def open_pool(
    config: ServiceConfig,
    *,
    min_size: int = 1,
    server_settings: dict[str, str] | None = None,
    stateless: bool = False,
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a database whose schema is current (SchemaBehindError otherwise).

    `stateless`: no user leaves session state behind (the redirect server's reads; the
    forwarder, whose one user that sets any, the purge job, resets its connection
    itself), so a connection needs no reset when it goes back to the pool (asyncpg
    still rolls back a transaction left open). asyncpg's reset is a round trip of its
    own on every release, four statements for the server: it doubled the time of a
    cold lookup, and cost the forwarder ~2 us of server CPU per click recorded.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        require_database_url(config),
        min_size=min(min_size, config.database_pool_size),
        max_size=config.database_pool_size,
        # A query that hangs must not hold a connection forever.
        command_timeout=60,
        server_settings=server_settings,
        reset=_keep_session if stateless else None,
    )
    try:
        async with pool.acquire() as conn:
            await check_schema(conn)
        yield pool
    finally:
        await pool.close()


def pool_context(
    config: ServiceConfig,
    *,
    server_settings: dict[str, str] | None = None,
    min_size: int = 1,
    stateless: bool = False,
) -> Callable[[web.Application], Any]:
    """cleanup_ctx: open the pool at start (checking the schema), close it at exit."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with open_pool(
            config, server_settings=server_settings, min_size=min_size, stateless=stateless
        ) as pool:
            app[POOL] = pool
            yield

    return context


def read_pool_context(config: ServiceConfig) -> Callable[[web.Application], Any]:
    """cleanup_ctx (after pool_context): READ_POOL on DATABASE_READ_URL, whose sessions are
    read-only (a URL that leads to the primary by mistake still writes nothing), or POOL."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if config.database_read_url is None:
            app[READ_POOL] = app[POOL]
            yield
            return
        replica = dataclasses.replace(config, database_url=config.database_read_url)
        # Single statements that change no session state: no reset round trip either.
        async with open_pool(
            replica, server_settings={"default_transaction_read_only": "on"}, stateless=True
        ) as pool:
            app[READ_POOL] = pool
            yield

    return context


class PoolBusy(TimeoutError):
    """Every connection of a full pool stayed in use: the server may be well (load)."""


async def promptly(
    pool: asyncpg.Pool, seconds: float, work: Callable[[Connection], Awaitable[T]]
) -> T:
    """`work` on one of `pool`'s connections, given up after `seconds` (TimeoutError).

    A connection whose statement was cut short is closed at once, not given back: asyncpg
    would first send the server a cancel request and wait for it (up to the command
    timeout again, on a host that is gone), and the next user would find the same silent
    connection. After a statement that did not answer in time, or a failure that says
    the connections may lead to a server that is gone or is now a standby, the pool's
    other connections are expired too: they probably lead to the same host, and
    connecting afresh finds the new primary (a multi-host DATABASE_URL with
    target_session_attrs=read-write). Running out of time while waiting for a free
    connection says nothing about the server and expires nothing: PoolBusy, when every
    connection of a full pool was in use.
    """
    conn = None
    busy = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
    try:
        async with asyncio.timeout(seconds):
            conn = await pool.acquire()
            return await work(conn)
    except (TimeoutError, asyncio.CancelledError) as exc:
        if conn is not None:
            conn.terminate()
            if isinstance(exc, TimeoutError):
                await pool.expire_connections()
        elif busy and isinstance(exc, TimeoutError):
            raise PoolBusy(f"no free connection within {seconds:g} s") from None
        raise
    except Exception as exc:
        if isinstance(exc, OSError | asyncpg.PostgresConnectionError) or needs_new_connections(exc):
            await pool.expire_connections()
        raise
    finally:
        if conn is not None:
            await pool.release(conn)
