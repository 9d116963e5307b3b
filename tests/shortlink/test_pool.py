"""A service's connection pool: opened on a current schema only, sized by the configuration,
without a reset round trip when stateless, tied to the app's lifecycle; `promptly` gives
up on a silent server and leaves no silent connection behind."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from shortlink.config import ServiceConfig
from shortlink.db import Connection
from shortlink.exceptions import SchemaBehindError
from shortlink.pool import POOL, open_pool, pool_context, promptly
from tests.infra import DatabaseProxy, running


async def test_service_pool_refuses_a_schema_behind(empty_database_url: str) -> None:
    """Opening a service pool on an unmigrated database raises SchemaBehindError."""
    config = ServiceConfig.from_env({"DATABASE_URL": empty_database_url})
    with pytest.raises(SchemaBehindError, match="shortlink migrate"):
        async with open_pool(config):
            pass


async def test_the_pool_is_sized_by_the_configuration(database_url: str) -> None:
    """DATABASE_POOL_SIZE caps the pool; min_size never exceeds it; server settings apply."""
    config = ServiceConfig.from_env({"DATABASE_URL": database_url, "DATABASE_POOL_SIZE": "2"})
    async with open_pool(
        config, min_size=5, server_settings={"application_name": "pool-test"}
    ) as pool:
        assert (pool.get_min_size(), pool.get_max_size()) == (2, 2)
        assert await pool.fetchval("SELECT current_setting('application_name')") == "pool-test"
    assert pool.is_closing()


@pytest.mark.parametrize("stateless", [True, False])
async def test_a_stateless_pool_does_not_reset_connections(
    database_url: str, stateless: bool
) -> None:
    """A stateless pool gives a connection back as it was (no reset round trip); otherwise
    session state set by one user is reset before the next."""
    config = ServiceConfig.from_env({"DATABASE_URL": database_url, "DATABASE_POOL_SIZE": "1"})
    async with open_pool(config, stateless=stateless) as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET SESSION enable_hashjoin = off")
        async with pool.acquire() as conn:
            setting = await conn.fetchval("SELECT current_setting('enable_hashjoin')")
    assert setting == ("off" if stateless else "on")


async def test_the_pool_lives_as_long_as_the_app(database_url: str) -> None:
    """pool_context opens the pool under POOL at start and closes it at exit."""
    config = ServiceConfig.from_env({"DATABASE_URL": database_url})
    app = web.Application()
    app.cleanup_ctx.append(pool_context(config))
    async with running(app):
        pool = app[POOL]
        assert await pool.fetchval("SELECT 1") == 1
    assert pool.is_closing()


async def _backend_pid(conn: Connection) -> int:
    found: int = await conn.fetchval("SELECT pg_backend_pid()")
    return found


async def test_promptly_gives_up_on_a_silent_server_and_connects_afresh(
    database_url: str,
) -> None:
    """A statement on a connection gone silent is given up at the bound, not after the 60 s
    command timeout and a cancel request; neither it nor the pool's other silent
    connection is used again: the next users connect afresh."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    try:
        config = ServiceConfig.from_env({"DATABASE_URL": proxy.url, "DATABASE_POOL_SIZE": "2"})
        async with open_pool(config, min_size=2) as pool:
            async with pool.acquire() as first, pool.acquire() as second:
                before = {await _backend_pid(first), await _backend_pid(second)}
            proxy.freeze()  # both go silent; new connections still work
            async with asyncio.timeout(10):
                with pytest.raises(TimeoutError):
                    await promptly(pool, 0.3, _backend_pid)
                after = {await promptly(pool, 5, _backend_pid) for _ in range(3)}
            assert after
            assert not after & before
    finally:
        await proxy.stop()
