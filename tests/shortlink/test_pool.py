"""A service's connection pool: opened on a current schema only, sized by the configuration,
without a reset round trip when stateless, and tied to the app's lifecycle."""

from __future__ import annotations

import pytest
from aiohttp import web

from shortlink.config import ServiceConfig
from shortlink.exceptions import SchemaBehindError
from shortlink.pool import POOL, open_pool, pool_context
from tests.infra import running


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
