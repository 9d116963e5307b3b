"""The PostgreSQL connection pool of a service and its lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp import web

from shortlink.config import ServiceConfig
from shortlink.db import require_database_url
from shortlink.schema import check_schema

POOL = web.AppKey("pool", asyncpg.Pool)


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
