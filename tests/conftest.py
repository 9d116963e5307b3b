"""Session infrastructure: a real PostgreSQL and a real Kafka-protocol broker.

DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, when set, name servers to use; otherwise
the session starts the embedded PostgreSQL and a tansu broker itself. Either way
the session works in a database of its own (created, migrated, dropped at the
end) and every test that publishes gets a topic of its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shortlink import accounts, schema
from shortlink.db import with_database
from shortlink.dev import embedded
from shortlink.kafka import ensure_topic
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.config import RedirectConfig
from tests.dnsserver import DnsServer, dns_server
from tests.infra import RunningServer, running, unique_name

# Servers the tests start as processes serve no metrics port unless a test asks
# for one (two at once on the default ports would collide).
os.environ["REDIRECT_METRICS_PORT"] = "0"
os.environ["API_METRICS_PORT"] = "0"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PostgreSQL server: DATABASE_URL, or the embedded one in a temporary folder."""
    given = os.environ.get("DATABASE_URL")
    if given:
        return given
    return embedded.ensure_postgres(tmp_path_factory.mktemp("embedded"))


async def _create_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(server_url, name))
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A migrated database of this session's own on the server."""
    name = unique_name("shortlink_test")
    asyncio.run(_create_database(server_url, name))
    yield with_database(server_url, name)
    asyncio.run(_drop_database(server_url, name))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-protocol broker: KAFKA_BOOTSTRAP_SERVERS, or a tansu started for the session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    broker = embedded.Broker(
        "127.0.0.1", embedded.free_port(), tmp_path_factory.mktemp("tansu") / "tansu.log"
    )
    broker.start()
    yield broker.bootstrap_servers
    broker.stop()


@pytest.fixture(scope="session")
def dns() -> Iterator[DnsServer]:
    """A real DNS server on 127.0.0.1 (UDP) serving the TXT records tests put in it."""
    with dns_server() as server:
        yield server


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session's database."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def account_id(db: asyncpg.Connection) -> int:
    """A fresh account."""
    account = await accounts.create_account(db, unique_name("acct"))
    return account.account_id


@pytest.fixture
async def click_topic(kafka_bootstrap: str) -> str:
    """A click topic of this test's own, with 3 partitions."""
    name = unique_name("clicks")
    await ensure_topic(kafka_bootstrap, name, 3)
    return name


@pytest.fixture
def redirect_env(
    database_url: str, kafka_bootstrap: str, click_topic: str, tmp_path: Path
) -> dict[str, str]:
    """Environment for a redirect server on the session's servers and the test's topic."""
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CLICK_TOPIC": click_topic,
        "SPOOL_DIR": str(tmp_path / "spool"),
        "PUBLISH_LINGER_MS": "5",
        "DATABASE_POOL_SIZE": "4",
        # Links answer on this name and on addresses (shortlink.redirect.domains).
        "SHORT_DOMAIN": "sl.test",
    }


@pytest.fixture
async def redirect_server(redirect_env: dict[str, str]) -> AsyncIterator[RunningServer]:
    """The redirect server, running in the test's event loop on a free port."""
    config = RedirectConfig.from_env(redirect_env)
    async with running(create_app(config), make_handler) as server:
        yield server


@pytest.fixture
async def cold_redirect_server(redirect_env: dict[str, str]) -> AsyncIterator[RunningServer]:
    """The redirect server with warming off: every first tap is a lookup (the cold path)."""
    config = RedirectConfig.from_env({**redirect_env, "WARM_ON_CREATE": "false"})
    async with running(create_app(config), make_handler) as server:
        yield server


@pytest.fixture
async def own_database_url(server_url: str) -> AsyncIterator[str]:
    """A migrated database of the test's own, dropped after it: for tests that drop
    partitions or act as at another moment, which the session's database must not see."""
    name = unique_name("shortlink_own")
    await _create_database(server_url, name)
    yield with_database(server_url, name)
    await _drop_database(server_url, name)


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A new database with no migrations applied, dropped after the test."""
    name = unique_name("shortlink_empty")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield with_database(server_url, name)
    await _drop_database(server_url, name)
