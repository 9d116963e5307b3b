"""The PostgreSQL connection pools of a service and their lifecycle.

POOL leads to the primary: everything that writes, and every read that must see the
latest write (an API key, a dashboard session, a link). READ_POOL serves the reads
that may lag a little: campaign statistics, click listings, the dashboard's figures
and charts, the CSV exports. With DATABASE_READ_URL it leads to a streaming replica,
so those pages never load the primary that records clicks; without it, it is POOL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp import web

from shortlink.config import ServiceConfig
from shortlink.db import require_database_url
from shortlink.schema import check_schema

POOL = web.AppKey("pool", asyncpg.Pool)
READ_POOL = web.AppKey("read_pool", asyncpg.Pool)


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

    `stateless`: every use is a single autocommit statement that changes no session
    state (the redirect server's reads), so a connection needs no reset when it goes
    back to the pool. asyncpg's reset is a round trip of its own on every release:
    it doubled the time of a cold lookup.
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
