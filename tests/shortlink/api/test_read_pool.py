"""DATABASE_READ_URL: statistics, click listings, the campaign list, the CSV exports and the
dashboard's campaign pages read through it; everything else through DATABASE_URL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from forwarder.recorder import record
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from shortlink.config import ServiceConfig
from shortlink.pool import POOL, READ_POOL
from tests.clicks import clicks, events, make_links
from tests.infra import RunningServer, running
from tests.shortlink.api.conftest import Client, Tenant
from tests.shortlink.api.dashboard.conftest import SECRET
from tests.shortlink.api.dashboard.test_pages import fetch
from tests.shortlink.api.dashboard.test_sessions import sign_in


def as_role(url: str, role: str, password: str) -> str:
    """`url` signing in as another role."""
    parts = urlsplit(url)
    netloc = f"{role}:{password}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def reader(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A role of its own that may only read the database: the read pool signs in as it."""
    role = f"reader_{secrets.token_hex(5)}"
    password = secrets.token_hex(8)
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    await db.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    await db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    yield role
    await db.execute(f"DROP OWNED BY {role}")
    await db.execute(f"DROP ROLE {role}")


@pytest.fixture
async def split_api(
    api_env: dict[str, str], database_url: str, reader: str
) -> AsyncIterator[RunningServer]:
    """The API (dashboard on) with DATABASE_READ_URL signing in as the reader role."""
    env = {
        **api_env,
        "DATABASE_READ_URL": as_role(database_url, reader, "unused-with-trust"),
        "DASHBOARD_ENABLED": "true",
        "DASHBOARD_SECRET": SECRET,
        "SHORT_URL_SCHEME": "http",
    }
    async with running(create_app(ApiConfig.from_env(env))) as server:
        yield server


async def last_read(db: asyncpg.Connection, role: str) -> datetime | None:
    """When the role's sessions last started a statement."""
    found: datetime | None = await db.fetchval(
        "SELECT max(query_start) FROM pg_stat_activity WHERE usename = $1", role
    )
    return found


async def test_campaign_reads_go_to_the_read_url_and_the_rest_to_the_primary(
    split_api: RunningServer, db: asyncpg.Connection, tenant: Tenant, reader: str
) -> None:
    """Each statistics, listing, CSV and dashboard request runs its queries as the read
    role; creating links and reading one (the primary's work) never touches it."""
    made = await make_links(db, tenant.account_id, 4, client_identifier="read-side")
    await record(db, events(clicks(made)), batch_size=100)
    async with aiohttp.ClientSession() as session:
        client = Client(split_api, session, tenant.key)

        async def read_by_reader(path: str) -> bool:
            before = await db.fetchval("SELECT clock_timestamp()")
            headers = {"Authorization": f"Bearer {tenant.key}"}
            async with session.get(split_api.url + path, headers=headers) as answer:
                assert answer.status == 200, (path, answer.status)
                await answer.read()  # a CSV streams its batches until it is read
            after = await last_read(db, reader)
            return after is not None and after > before

        for path in (
            "/v1/campaigns/read-side/stats",
            "/v1/campaigns/read-side/clicks",
            "/v1/campaigns",
            "/v1/campaigns/read-side/clicks.csv",
            "/v1/campaigns/read-side/recipients.csv",
        ):
            assert await read_by_reader(path), path

        before = await db.fetchval("SELECT clock_timestamp()")
        created = await client.post(
            "/v1/links",
            {"url": "https://shop.example/", "recipients": [{"phone_number": "447700900123"}]},
        )
        assert created.status == 201
        token = created.json["links"][0]["token"]
        assert (await client.get(f"/v1/links/{token}")).status == 200
        latest = await last_read(db, reader)
        assert latest is None or latest <= before

        cookie = await sign_in(split_api, session, tenant.key)
        before = await db.fetchval("SELECT clock_timestamp()")
        status, _, _ = await fetch(split_api, session, "/dashboard/campaigns/read-side", cookie)
        assert status == 200
        latest = await last_read(db, reader)
        assert latest is not None
        assert latest > before


async def test_the_read_pool_refuses_writes(api_env: dict[str, str], database_url: str) -> None:
    """Sessions of the read pool are read-only, even when DATABASE_READ_URL is the primary;
    without DATABASE_READ_URL the read pool is the primary's pool."""
    env = {**api_env, "DATABASE_READ_URL": database_url}
    async with running(create_app(ApiConfig.from_env(env))) as server:
        pool = server.app[READ_POOL]
        assert pool is not server.app[POOL]
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await pool.execute("CREATE TEMPORARY TABLE nothing (x int)")
    async with running(create_app(ApiConfig.from_env(api_env))) as server:
        assert server.app[READ_POOL] is server.app[POOL]


def test_database_read_url_is_optional() -> None:
    """DATABASE_READ_URL is read as given, and absent means None."""
    assert ServiceConfig.from_env({}).database_read_url is None
    url = "postgresql://reader@replica:5432/shortlink"
    assert ServiceConfig.from_env({"DATABASE_READ_URL": url}).database_read_url == url
