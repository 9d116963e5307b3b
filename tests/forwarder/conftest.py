"""Forwarder fixtures: a real customer endpoint on 127.0.0.1, links, click events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from forwarder.app import create_app
from forwarder.config import ForwarderConfig
from tests.forwarder.endpoint import Sink
from tests.infra import RunningServer, running, unique_name

SinkFactory = Callable[[], "asyncio.Future[Sink]"]


@pytest.fixture
async def make_sink(aiohttp_server: Callable[..., object]) -> Callable[[], object]:
    """Start customer endpoints on free ports of 127.0.0.1."""

    async def start() -> Sink:
        sink = Sink()
        app = web.Application()
        app.router.add_post("/hook", sink.handle)
        server: TestServer = await aiohttp_server(app)  # type: ignore[operator]
        sink.url = str(server.make_url("/hook"))
        return sink

    return start


@pytest.fixture
async def sink(make_sink: Callable[[], object]) -> Sink:
    """One customer endpoint."""
    return await make_sink()  # type: ignore[no-any-return, misc]


@pytest.fixture
def forwarder_env(database_url: str, kafka_bootstrap: str, click_topic: str) -> dict[str, str]:
    """Environment of a forwarder on the session's servers and the test's topic."""
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CLICK_TOPIC": click_topic,
        "FORWARDER_GROUP": unique_name("group"),
        "ALLOW_PRIVATE_ENDPOINTS": "true",
        "DELIVERY_LINGER_MS": "300",
        "DELIVERY_RETRY_BASE_SECONDS": "0.1",
        "DATABASE_POOL_SIZE": "5",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",  # the broker minimum: joins the group faster
    }


@pytest.fixture
async def forwarder(forwarder_env: dict[str, str]) -> AsyncIterator[RunningServer]:
    """The forwarder, running in the test's event loop."""
    async with running(create_app(ForwarderConfig.from_env(forwarder_env))) as server:
        yield server


def write_city_database(path: Path) -> Path:
    """A real MaxMind DB file in the GeoLite2-City layout, with a few networks, at `path`."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"]
    )

    def city(country: str, region: str) -> dict[str, object]:
        return {
            "country": {"iso_code": country, "names": {"en": country}},
            "subdivisions": [{"iso_code": "X", "names": {"en": region}}],
        }

    writer.insert_network(IPSet(["145.97.0.0/16"]), city("NL", "North Holland"))
    writer.insert_network(IPSet(["81.2.69.0/24"]), city("GB", "England"))
    writer.insert_network(IPSet(["2a02:a440::/32"]), city("NL", "Utrecht"))
    # Anycast blocks carry only the registered country in GeoLite2.
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"registered_country": {"iso_code": "US"}})
    writer.insert_network(IPSet(["1.1.1.0/24"]), {"country": 42})  # a shape we do not read
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def city_database(tmp_path: Path) -> Path:
    """GEOIP_DATABASE for a test: a small real .mmdb built for it."""
    return write_city_database(tmp_path / "city.mmdb")
