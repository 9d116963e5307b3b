"""Forwarder fixtures: a real customer endpoint on 127.0.0.1, links, click events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from forwarder.app import create_app
from forwarder.config import ForwarderConfig
from shortlink import clickevent
from shortlink.links import LinkEntry, NewLink, create_links, epoch_ms
from tests.infra import RunningServer, publish_events, running, unique_name

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Sink:
    """A customer endpoint: records every POST and answers as the test says."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    # Statuses to answer in order; then `status`. A float is a delay before answering 200.
    script: list[int | float] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received(time.monotonic(), dict(request.headers), await request.read())
        )
        step: int | float = self.script.pop(0) if self.script else self.status
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = 200
        return web.Response(status=step, headers=self.headers)


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


async def make_links(
    db: asyncpg.Connection, account_id: int, count: int, **fields: object
) -> list[LinkEntry]:
    """Links of the account, as the redirect server would have them cached."""
    specs = [
        NewLink(
            target_url=str(fields.get("target_url", f"https://shop.example.com/p/{i}")),
            phone_number=str(fields.get("phone_number", f"4477009{i:05d}")),
            client_ref=f"msg-{i}",
            client_identifier=str(fields.get("client_identifier", "spring-sale")),
        )
        for i in range(count)
    ]
    created = await create_links(db, account_id, specs)
    return [
        LinkEntry(
            c.id,
            c.token,
            account_id,
            s.target_url,
            s.phone_number,
            s.client_ref,
            s.client_identifier,
            epoch_ms(c.created_at),
            c.expires_at.timestamp(),
            False,
            False,
        )
        for c, s in zip(created, specs, strict=True)
    ]


_IDS = clickevent.EventIds()


def clicks(
    links: list[LinkEntry],
    *,
    user_agent: str | None = IPHONE,
    method: str = "GET",
    ip: str = "203.0.113.7",
    warning: bool = False,
    at: float | None = None,
) -> list[tuple[str, bytes]]:
    """One encoded click event per link."""
    now = time.time() if at is None else at
    ids = _IDS.take(len(links), int(now * 1000))
    return [
        (
            link.token,
            clickevent.encode(
                event_id, clickevent.facts(link, now, user_agent, ip, None, method, warning)
            ),
        )
        for event_id, link in zip(ids, links, strict=True)
    ]


async def publish(kafka_bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    await publish_events(kafka_bootstrap, topic, values)


async def set_endpoint(
    db: asyncpg.Connection, account_id: int, url: str, **options: object
) -> None:
    from shortlink.endpoints import set_endpoint as store

    await store(
        db,
        account_id,
        url=url,
        format=str(options.get("format", "json")),
        mode=str(options.get("mode", "every")),
        secret=options.get("secret"),  # type: ignore[arg-type]
        enabled=True,
        allow_private=True,
        conversions=bool(options.get("conversions", False)),
    )


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
