"""The PostgreSQL connection pool of a service and its lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from shortlink.config import ServiceConfig
from shortlink.schema import check_schema

POOL = web.AppKey("pool", asyncpg.Pool)

# A connection of our own or one borrowed from a pool: queries take either.
Connection = asyncpg.Connection | PoolConnectionProxy
# What a single read can run on: a connection, or the pool (which lends one).
Executor = Connection | asyncpg.Pool


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def require_database_url(config: ServiceConfig) -> str:
    """The database URL; the CLI fills it in (embedded server) before services start."""
    if config.database_url is None:
        raise RuntimeError("DATABASE_URL must be resolved before a service starts")
    return config.database_url


@asynccontextmanager
async def open_pool(
    config: ServiceConfig, *, min_size: int = 1, server_settings: dict[str, str] | None = None
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a database whose schema is current (SchemaBehindError otherwise)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        require_database_url(config),
        min_size=min(min_size, config.database_pool_size),
        max_size=config.database_pool_size,
        # A query that hangs must not hold a connection forever.
        command_timeout=60,
        server_settings=server_settings,
    )
    try:
        async with pool.acquire() as conn:
            await check_schema(conn)
        yield pool
    finally:
        await pool.close()


def pool_context(
    config: ServiceConfig, *, server_settings: dict[str, str] | None = None
) -> Callable[[web.Application], Any]:
    """cleanup_ctx: open the pool at start (checking the schema), close it at exit."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with open_pool(config, server_settings=server_settings) as pool:
            app[POOL] = pool
            yield

    return context
