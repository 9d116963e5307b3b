"""DATABASE_READ_URL: statistics, click listings, the campaign list, the CSV exports and the
dashboard's campaign pages read through it; everything else through DATABASE_URL. With
the primary cut off, those routes check their key on it and answer; the rest are a 503."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from forwarder.recorder import record
from shortlink.api.app import create_app
from shortlink.api.auth import READ_SIDE
from shortlink.api.config import ApiConfig
from shortlink.config import ServiceConfig
from shortlink.pool import POOL, READ_POOL
from tests.clicks import clicks, events, make_links
from tests.infra import DatabaseProxy, RunningServer, running
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


def reading_as(reader: str, api_env: dict[str, str], database_url: str) -> dict[str, str]:
    """The API's environment with DATABASE_READ_URL signing in as the reader role."""
    return {**api_env, "DATABASE_READ_URL": as_role(database_url, reader, "unused-with-trust")}


@pytest.fixture
async def split_api(
    api_env: dict[str, str], database_url: str, reader: str
) -> AsyncIterator[RunningServer]:
    """The API (dashboard on) with DATABASE_READ_URL signing in as the reader role."""
    env = {
        **reading_as(reader, api_env, database_url),
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


@pytest.fixture
async def primary(database_url: str) -> AsyncIterator[DatabaseProxy]:
    """The primary, reached through a proxy that can cut it off."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def cut_api(
    api_env: dict[str, str], database_url: str, reader: str, primary: DatabaseProxy
) -> AsyncIterator[RunningServer]:
    """The API (dashboard on) with DATABASE_URL through `primary` and DATABASE_READ_URL
    signing in as the reader role, waiting half a second for the primary's key checks."""
    env = {
        **api_env,
        "DATABASE_URL": primary.url,
        "DATABASE_READ_URL": as_role(database_url, reader, "unused-with-trust"),
        "DASHBOARD_ENABLED": "true",
        "DASHBOARD_SECRET": SECRET,
        "SHORT_URL_SCHEME": "http",
        "KEY_CHECK_TIMEOUT_SECONDS": "0.5",
    }
    async with running(create_app(ApiConfig.from_env(env))) as server:
        yield server


# Far below the 60 s for which a statement on a silent connection would wait.
PROMPTLY = aiohttp.ClientTimeout(total=15)


async def test_with_the_primary_cut_off_statistics_and_campaign_pages_still_answer(
    cut_api: RunningServer, primary: DatabaseProxy, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A primary that answers nothing: each read-side route checks its key (or session) on
    the read pool without counting it and answers 200, again and again; before, on the
    primary, each request was counted."""
    made = await make_links(db, tenant.account_id, 4, client_identifier="cut-off")
    await record(db, events(clicks(made)), batch_size=100)
    headers = {"Authorization": f"Bearer {tenant.key}"}
    stats = f"{cut_api.url}/v1/campaigns/cut-off/stats"
    async with aiohttp.ClientSession(timeout=PROMPTLY) as session:
        remaining = []
        for _ in range(2):
            async with session.get(stats, headers=headers) as answer:
                assert answer.status == 200
                remaining.append(int(answer.headers["RateLimit-Remaining"]))
        assert remaining[1] == remaining[0] - 1
        cookie = await sign_in(cut_api, session, tenant.key)

        primary.cut()
        for _ in range(2):
            async with session.get(stats, headers=headers) as answer:
                assert answer.status == 200
                assert (await answer.json())["total_clicks"] == 4
                assert answer.headers["RateLimit-Remaining"] == answer.headers["RateLimit-Limit"]
            for path in ("/dashboard/campaigns/cut-off", "/dashboard/campaigns"):
                status, _, html = await fetch(cut_api, session, path, cookie)
                assert status == 200, path
                assert "cut-off" in html
        for path in ("/v1/campaigns", "/v1/campaigns/cut-off/clicks.csv"):
            async with session.get(cut_api.url + path, headers=headers) as answer:
                assert answer.status == 200, path
                await answer.read()


async def test_after_the_primary_failed_a_check_reads_skip_it_for_a_while(
    cut_api: RunningServer, primary: DatabaseProxy, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Only the first read after the primary stopped answering waits for its key check
    (KEY_CHECK_TIMEOUT_SECONDS, 0.5 here); the next ones go to the read pool at once, and
    a write still tries the primary (a 503)."""
    await make_links(db, tenant.account_id, 1, client_identifier="away")
    headers = {"Authorization": f"Bearer {tenant.key}"}
    stats = f"{cut_api.url}/v1/campaigns/away/stats"
    async with aiohttp.ClientSession(timeout=PROMPTLY) as session:
        primary.cut()
        took = []
        for _ in range(3):
            started = time.monotonic()
            async with session.get(stats, headers=headers) as answer:
                assert answer.status == 200
            took.append(time.monotonic() - started)
        assert took[0] >= 0.5
        assert max(took[1:]) < 0.4, took
        write = {"url": "https://shop.example/"}
        async with session.post(f"{cut_api.url}/v1/links", json=write, headers=headers) as answer:
            assert answer.status == 503


@pytest.fixture
async def busy_api(
    api_env: dict[str, str], database_url: str, reader: str
) -> AsyncIterator[RunningServer]:
    """The API on a healthy primary with a pool of one connection, 5 requests a minute."""
    env = {
        **reading_as(reader, api_env, database_url),
        "KEY_CHECK_TIMEOUT_SECONDS": "0.3",
        "DATABASE_POOL_SIZE": "1",
        "API_RATE_LIMIT_PER_MINUTE": "5",
    }
    async with running(create_app(ApiConfig.from_env(env))) as server:
        yield server


async def test_a_busy_pool_does_not_take_the_primary_for_away(
    busy_api: RunningServer, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Every connection to a healthy primary in use: that read is checked on the replica
    (uncounted) and a write is a 503, but the next reads are counted on the primary again
    (taking it for away made every read uncounted for 10 s: load lifted the rate limit)."""
    await make_links(db, tenant.account_id, 1, client_identifier="busy")
    headers = {"Authorization": f"Bearer {tenant.key}"}
    stats = f"{busy_api.url}/v1/campaigns/busy/stats"
    pool = busy_api.app[POOL]
    async with aiohttp.ClientSession(timeout=PROMPTLY) as session:
        held = await pool.acquire()
        try:
            async with session.get(stats, headers=headers) as answer:
                assert answer.status == 200
                assert answer.headers["RateLimit-Remaining"] == "5"
            write = {"url": "https://shop.example/"}
            link = f"{busy_api.url}/v1/links"
            async with session.post(link, json=write, headers=headers) as answer:
                assert answer.status == 503
        finally:
            await pool.release(held)
        remaining = []
        for _ in range(2):
            async with session.get(stats, headers=headers) as answer:
                assert answer.status == 200
                remaining.append(int(answer.headers["RateLimit-Remaining"]))
    assert remaining == [4, 3]


async def test_with_the_primary_cut_off_the_rest_is_a_prompt_503(
    cut_api: RunningServer, primary: DatabaseProxy, tenant: Tenant
) -> None:
    """A primary that answers nothing: a write, and a read that needs the primary, are a
    503 with the JSON error once the key check gave up, every time."""
    primary.cut()
    headers = {"Authorization": f"Bearer {tenant.key}"}
    async with aiohttp.ClientSession(timeout=PROMPTLY) as session:
        for method, path, body in [
            ("POST", "/v1/links", {"url": "https://shop.example/"}),
            ("GET", "/v1/links/AbCdEf1", None),
            ("POST", "/v1/links", {"url": "https://shop.example/"}),
        ]:
            async with session.request(
                method, cut_api.url + path, json=body, headers=headers
            ) as answer:
                assert answer.status == 503, (method, path)
                assert (await answer.json())["error"]["code"] == "unavailable"


def test_every_read_side_route_is_one_the_api_serves() -> None:
    """READ_SIDE names routes the API serves (a renamed route would lose its fallback)."""
    env = {"SHORT_DOMAIN": "sl.test", "DASHBOARD_ENABLED": "true", "DASHBOARD_SECRET": SECRET}
    served = {
        (route.method, route.resource.canonical)
        for route in create_app(ApiConfig.from_env(env)).router.routes()
        if route.resource is not None
    }
    assert served >= READ_SIDE


async def test_with_no_primary_among_the_hosts_reads_answer_and_the_rest_is_a_503(
    api_env: dict[str, str], database_url: str, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """When DATABASE_URL (target_session_attrs=read-write) finds no host that takes writes, as
    in a failover before the promotion, the statistics answer from the read pool and a
    write is a 503, not a 500."""
    role = f"writer_{secrets.token_hex(5)}"
    owner = await db.fetchval("SELECT current_user")
    await db.execute(f'CREATE ROLE {role} LOGIN IN ROLE "{owner}"')
    url = as_role(database_url, role, "unused-with-trust")
    env = {
        **api_env,
        "DATABASE_URL": url + ("&" if "?" in url else "?") + "target_session_attrs=read-write",
        "DATABASE_READ_URL": database_url,
    }
    headers = {"Authorization": f"Bearer {tenant.key}"}
    try:
        async with (
            running(create_app(ApiConfig.from_env(env))) as server,
            aiohttp.ClientSession(timeout=PROMPTLY) as session,
        ):
            await db.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
            await server.app[POOL].expire_connections()
            async with session.get(f"{server.url}/v1/campaigns", headers=headers) as answer:
                assert answer.status == 200
            async with session.post(
                f"{server.url}/v1/links", json={"url": "https://shop.example/"}, headers=headers
            ) as answer:
                assert answer.status == 503
                assert (await answer.json())["error"]["code"] == "unavailable"
    finally:
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")
