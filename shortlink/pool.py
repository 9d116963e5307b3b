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
