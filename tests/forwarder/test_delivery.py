"""Delivering to a real customer endpoint on 127.0.0.1: batches, formats, retries, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from forwarder import formats
from forwarder.app import create_app
from forwarder.config import ForwarderConfig
from forwarder.delivery import (
    HTTP_SESSION,
    Deliverer,
    parse_retry_after,
    retry_delay,
    session_context,
)
from shortlink import clickevent
from shortlink.accounts import create_account
from shortlink.deliveries import list_deliveries, retry_dead
from shortlink.endpoints import set_endpoint as store_endpoint
from shortlink.exceptions import PrivateAddressError
from shortlink.links import LinkEntry, fetch_entry
from shortlink.pool import open_pool
from shortlink.supervise import SUPERVISOR, Supervisor
from tests.clicks import clicks, make_links, publish
from tests.forwarder.endpoint import Sink, set_endpoint, settled
from tests.forwarder.test_formats import SEED_DETAIL
from tests.infra import RunningServer, metric_samples, running, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def deliveries_of(db: asyncpg.Connection, account_id: int) -> list[asyncpg.Record]:
    return await db.fetch(
        """
        SELECT d.* FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
        WHERE e.account_id = $1 ORDER BY d.created_at
        """,
        account_id,
    )


async def test_250_clicks_arrive_in_batches_of_at_most_100_with_every_field(
    forwarder: RunningServer,
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """250 clicks reach the endpoint in POSTs of at most 100 ClickDetails, each once."""
    await set_endpoint(db, account_id, sink.url)
    links = await make_links(db, account_id, 250)
    values = clicks(links)
    await publish(kafka_bootstrap, click_topic, values)
    await wait_until(
        lambda: sum(len(orjson.loads(r.body)["ClickDetails"]) for r in sink.received) >= 250
    )
    await settled(forwarder, db, account_id, received=250)
    bodies = [orjson.loads(r.body) for r in sink.received]
    sizes = [len(b["ClickDetails"]) for b in bodies]
    assert sum(sizes) == 250
    assert max(sizes) <= 100
    assert len({b["RequestIdentifier"] for b in bodies}) == len(bodies) >= 3
    assert all(
        r.headers["Content-Type"] == "application/json; charset=utf-8" for r in sink.received
    )
    by_id = {d["TrackingUrlId"]: d for b in bodies for d in b["ClickDetails"]}
    assert len(by_id) == 250
    event = clickevent.decode(values[7][1])
    detail = by_id[event.link_id]
    assert list(detail) == [
        "TrackedUrl",
        "ClientIdentifier",
        "ClientRef",
        "TrackingUrlId",
        "UserId",
        "PhoneNumber",
        "UserAgent",
        "Referrer",
        "DeviceName",
        "DeviceManufacturer",
        "IsWarningPageServed",
        "ShortenDate",
        "ClickDate",
    ]
    assert detail == {
        "TrackedUrl": event.target_url,
        "ClientIdentifier": "spring-sale",
        "ClientRef": event.client_ref,
        "TrackingUrlId": event.link_id,
        "UserId": account_id,
        "PhoneNumber": event.phone_number,
        "UserAgent": event.user_agent,
        "Referrer": "203.0.113.7",
        "DeviceName": "iPhone",
        "DeviceManufacturer": "Apple",
        "IsWarningPageServed": False,
        "ShortenDate": f"/Date({event.shortened_at_ms})/",
        "ClickDate": f"/Date({event.clicked_at_ms})/",
    }
    assert b'"ClickDate":"\\/Date(' in sink.received[0].body


async def test_xml_endpoint_gets_click_forward_documents(
    forwarder: RunningServer,
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An xml endpoint receives a ClickForward document whose fields match the clicks."""
    await set_endpoint(db, account_id, sink.url, format="xml")
    links = await make_links(db, account_id, 3)
    values = clicks(links, warning=True)
    await publish(kafka_bootstrap, click_topic, values)
    await wait_until(lambda: len(sink.received) == 1)
    received = sink.received[0]
    assert received.headers["Content-Type"] == "application/xml; charset=utf-8"
    root = ET.fromstring(received.body)
    assert root.tag == "ClickForward"
    assert root.findtext("RequestIdentifier") == received.headers["X-Request-Identifier"]
    details = root.findall("ClickDetails/ClickDetail")
    assert len(details) == 3
    expected = {clickevent.decode(v).link_id: clickevent.decode(v) for _, v in values}
    for element in details:
        event = expected[int(element.findtext("TrackingUrlId") or 0)]
        assert element.findtext("UserId") == str(account_id)
        assert element.findtext("PhoneNumber") == event.phone_number
        assert element.findtext("TrackedUrl") == event.target_url
        assert element.findtext("ClientRef") == event.client_ref
        assert element.findtext("IsWarningPageServed") == "true"
        click_date = element.findtext("ClickDate") or ""
        assert click_date.endswith("0000Z")
        assert len(click_date.split(".")[1]) == 8  # seven digits and the Z


async def test_retries_keep_the_request_identifier(
    forwarder: RunningServer,
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An endpoint answering 500, 500, then 200 receives the same batch three times."""
    sink.script = [500, 500, 200]
    await set_endpoint(db, account_id, sink.url)
    links = await make_links(db, account_id, 5)
    await publish(kafka_bootstrap, click_topic, clicks(links))
    await wait_until(lambda: len(sink.received) == 3, within=30)
    assert len({r.headers["X-Request-Identifier"] for r in sink.received}) == 1
    assert len({r.body for r in sink.received}) == 1
    [delivery] = await deliveries_of(db, account_id)
    # The sink counts a request when it arrives, before the forwarder has its answer.
    row = await wait_for_row(
        db,
        """
        SELECT status, attempts FROM deliveries
        WHERE request_identifier = $1 AND status = 'delivered'
        """,
        delivery["request_identifier"],
    )
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{forwarder.url}/metrics") as response:
            text = await response.text()
    found = metric_samples(text)
    assert found["forwarder_clicks_recorded_total", ()] == 5
    assert found["forwarder_delivery_attempts_total", (("result", "failed"),)] == 2
    assert found["forwarder_delivery_attempts_total", (("result", "delivered"),)] == 1
    endpoint = str(await db.fetchval("SELECT id FROM endpoints WHERE account_id = $1", account_id))
    assert found["forwarder_delivery_seconds_count", (("endpoint", endpoint),)] == 3
    assert found["forwarder_consumer_lag", ()] == 0
    assert ("forwarder_dead_letters", ()) in found
    assert ("forwarder_retry_queue", ()) in found
    assert ("forwarder_purge_runs_total", ()) in found


async def test_a_slow_endpoint_is_timed_out_and_retried(
    forwarder: RunningServer,
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An endpoint that takes 11 s is cut off at 10 s, and the batch is sent again."""
    sink.script = [11.0]
    await set_endpoint(db, account_id, sink.url)
    links = await make_links(db, account_id, 2)
    await publish(kafka_bootstrap, click_topic, clicks(links))
    await wait_until(lambda: len(sink.received) >= 2, within=30)
    first, second = sink.received[:2]
    assert 9.5 < second.at - first.at < 13
    assert first.headers["X-Request-Identifier"] == second.headers["X-Request-Identifier"]
    [delivery] = await deliveries_of(db, account_id)
    await wait_until(lambda: True)
    row = await db.fetchrow(
        "SELECT status, attempts FROM deliveries WHERE request_identifier = $1",
        delivery["request_identifier"],
    )
    assert row["status"] in ("delivered", "pending")
    history = await db.fetchval(
        "SELECT last_error FROM deliveries WHERE request_identifier = $1",
        delivery["request_identifier"],
    )
    assert history is None or "10 s" in history


async def test_a_dead_endpoint_does_not_delay_a_healthy_one(
    forwarder: RunningServer,
    make_sink: object,
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """While one endpoint hangs, another account's clicks are delivered within the linger."""
    from shortlink.accounts import create_account

    slow, healthy = await make_sink(), await make_sink()  # type: ignore[operator]
    slow.status = 200
    slow.script = [6.0, 6.0, 6.0]
    stuck = (await create_account(db, "stuck")).account_id
    fine = (await create_account(db, "fine")).account_id
    await set_endpoint(db, stuck, slow.url)
    await set_endpoint(db, fine, healthy.url)
    await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, stuck, 150)))
    await wait_until(lambda: len(slow.received) >= 1)
    started = time.monotonic()
    await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, fine, 3)))
    await wait_until(lambda: len(healthy.received) == 1, within=5)
    assert time.monotonic() - started < 3
    assert len(slow.received) == 1  # still stuck on its first batch, one request at a time


async def test_signatures_verify_with_standardwebhooks(
    forwarder: RunningServer,
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """With a secret, each POST carries Standard Webhooks headers the public library accepts."""
    await set_endpoint(db, account_id, sink.url, secret=SECRET)
    await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
    await wait_until(lambda: len(sink.received) == 1)
    received = sink.received[0]
    assert received.headers["webhook-id"] == received.headers["X-Request-Identifier"]
    payload = Webhook(SECRET).verify(received.body, received.headers)
    assert len(payload["ClickDetails"]) == 2
    tampered = received.body.replace(b"spring-sale", b"autumn-sale")
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(tampered, received.headers)


async def test_410_disables_the_endpoint(
    forwarder: RunningServer,
    sink: Sink,
    make_sink: Callable[[], Awaitable[Sink]],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An endpoint answering 410 Gone is disabled and receives nothing more."""
    sink.status = 410
    await set_endpoint(db, account_id, sink.url)
    await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
    await wait_until(lambda: len(sink.received) == 1)
    row = None

    async def disabled() -> bool:
        nonlocal row
        row = await db.fetchrow(
            "SELECT enabled, disabled_reason FROM endpoints WHERE account_id = $1", account_id
        )
        return row is not None and not row["enabled"]

    await wait_until(disabled, within=10, what="the endpoint disabled")
    assert row is not None
    assert "410" in row["disabled_reason"]

    async def due_again() -> bool:
        return bool(
            await db.fetchval(
                """
                SELECT bool_and(d.next_attempt_at <= now()) FROM deliveries d
                JOIN endpoints e ON e.id = d.endpoint_id
                WHERE e.account_id = $1 AND d.status = 'pending'
                """,
                account_id,
            )
        )

    await wait_until(due_again, what="the refused delivery due for another attempt")
    # Another account's click, published now, is sent by a later pass of the delivery loop:
    # one that would have sent the refused delivery again had the endpoint stayed enabled.
    other, witness = (await create_account(db, "witness")).account_id, await make_sink()
    await set_endpoint(db, other, witness.url)
    await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, other, 1)))
    await wait_until(lambda: len(witness.received) == 1, what="the other account's click sent")
    await settled(forwarder, db, other, received=3)
    assert len(sink.received) == 1


async def test_dead_letters_are_kept_and_can_be_sent_again(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """After the last attempt a delivery is dead with its last error; retry resends it."""
    sink.status = 503
    env = {**forwarder_env, "DELIVERY_MAX_ATTEMPTS": "3", "DELIVERY_RETRY_BASE_SECONDS": "0.05"}
    await set_endpoint(db, account_id, sink.url)
    async with running(create_app(ForwarderConfig.from_env(env))) as forwarder:
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
        await wait_until(lambda: len(sink.received) == 3)
        await settled(forwarder, db, account_id, received=2)
        [dead] = await deliveries_of(db, account_id)
        assert (dead["status"], dead["attempts"], dead["last_status"]) == ("dead", 3, 503)
        assert dead["last_error"] == "HTTP 503"
        assert len(sink.received) == 3
        sink.status = 200
        assert await retry_dead(db, account_id) == 1
        await wait_until(lambda: len(sink.received) == 4)
    ids = {r.headers["X-Request-Identifier"] for r in sink.received}
    assert ids == {str(dead["request_identifier"])}


def test_backoff_schedule_and_retry_after() -> None:
    """Waits double from the base with jitter, are capped, and respect Retry-After."""
    for attempt, (low, high) in enumerate([(2.5, 5), (5, 10), (10, 20), (20, 40)], start=1):
        waits = [retry_delay(attempt, 5, 3600) for _ in range(200)]
        assert low <= min(waits)
        assert max(waits) <= high
    assert retry_delay(30, 5, 60) <= 60
    assert retry_delay(1, 5, 3600, retry_after=120) == 120
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None


async def test_private_addresses_are_refused_by_default(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Without ALLOW_PRIVATE_ENDPOINTS, loopback, private and link-local targets are refused."""
    for url in (
        "http://127.0.0.1:8080/hook",
        "https://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
    ):
        with pytest.raises(PrivateAddressError, match="ALLOW_PRIVATE_ENDPOINTS"):
            await store_endpoint(
                db,
                account_id,
                url=url,
                format="json",
                mode="every",
                secret=None,
                enabled=True,
                allow_private=False,
            )


async def test_delivery_refuses_a_private_address_at_send_time(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An endpoint stored while private addresses were allowed is not called once they are not."""
    await set_endpoint(db, account_id, sink.url)
    env = {**forwarder_env, "ALLOW_PRIVATE_ENDPOINTS": "false", "DELIVERY_MAX_ATTEMPTS": "1"}
    async with running(create_app(ForwarderConfig.from_env(env))):
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 1)))

        async def dead() -> bool:
            rows = await deliveries_of(db, account_id)
            return bool(rows) and rows[0]["status"] == "dead"

        await wait_until(dead, within=15, step=0.1, what="the delivery dead")
    [row] = await deliveries_of(db, account_id)
    assert "not a public address" in row["last_error"]
    assert sink.received == []


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


async def https_sink(tmp_path: Path, ca: trustme.CA | None) -> tuple[web.AppRunner, Sink, int]:
    """A customer endpoint on https://localhost, signed by `ca` (or self-signed)."""
    sink = Sink()
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if ca is None:
        trustme.CA().issue_cert("localhost").configure_cert(context)  # an unknown CA
    else:
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    sink.url = f"https://localhost:{port}/hook"
    return runner, sink, port


async def test_tls_is_verified(
    forwarder_env: dict[str, str],
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    click_topic: str,
    tmp_path: Path,
    certificate_authority: trustme.CA,
) -> None:
    """A certificate from an unknown CA is refused; one from a trusted CA is accepted."""
    from shortlink.accounts import create_account

    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    env = {**forwarder_env, "ENDPOINT_CA_FILE": str(ca_file), "DELIVERY_MAX_ATTEMPTS": "1"}
    untrusted_runner, untrusted, _ = await https_sink(tmp_path, None)
    trusted_runner, trusted, _ = await https_sink(tmp_path, certificate_authority)
    try:
        bad = (await create_account(db, "untrusted")).account_id
        good = (await create_account(db, "trusted")).account_id
        await set_endpoint(db, bad, untrusted.url)
        await set_endpoint(db, good, trusted.url)
        async with running(create_app(ForwarderConfig.from_env(env))):
            await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, bad, 1)))
            await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, good, 1)))
            await wait_until(lambda: len(trusted.received) == 1)

            async def settled() -> bool:
                rows = await deliveries_of(db, bad)
                return bool(rows) and rows[0]["status"] == "dead"

            await wait_until(settled, within=15, step=0.1, what="the delivery dead")
        [refused] = await deliveries_of(db, bad)
        assert refused["last_error"].startswith("TLS")
        assert untrusted.received == []
    finally:
        await untrusted_runner.cleanup()
        await trusted_runner.cleanup()


# -- a deliverer of its own, and an endpoint that holds requests --------------------


@contextlib.asynccontextmanager
async def deliverer_running(
    env: dict[str, str], supervisor: Supervisor | None = None
) -> AsyncIterator[Deliverer]:
    """A delivery loop without a consumer, with the forwarder's own HTTP session."""
    config = ForwarderConfig.from_env(env)
    app = web.Application()
    session = session_context(config)(app)
    await anext(session)
    try:
        async with open_pool(config.service, min_size=2) as pool:
            deliverer = Deliverer(
                config, pool, app[HTTP_SESSION], supervisor=supervisor or Supervisor("forwarder")
            )
            loop = asyncio.create_task(deliverer.run())
            try:
                yield deliverer
                assert not loop.done(), "the delivery loop ended"
            finally:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
    finally:
        await anext(session, None)


@dataclass
class Gate:
    """A customer endpoint that holds each request until the test opens the gate (or
    for `hold` seconds), counting the requests in flight."""

    url: str = ""
    hold: float | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived.append(request.headers["X-Request-Identifier"])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold is None:
                await self.opened.wait()
            else:
                await asyncio.sleep(self.hold)
            return web.Response(status=200)
        finally:
            self.in_flight -= 1  # also when the client gave up (the handler is cancelled)


@pytest.fixture
async def gate(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Gate:
    """One holding endpoint on 127.0.0.1."""
    gate = Gate()
    app = web.Application()
    app.router.add_post("/hook", gate.handle)
    server = await aiohttp_server(app)
    gate.url = str(server.make_url("/hook"))
    return gate


async def endpoint_of(db: asyncpg.Connection, account_id: int) -> int:
    found: int = await db.fetchval("SELECT id FROM endpoints WHERE account_id = $1", account_id)
    return found


async def add_delivery(db: asyncpg.Connection, endpoint_id: int, format: str = "json") -> str:
    """A pending delivery of one click, as the recorder makes them."""
    request_id = str(uuid.uuid4())
    renders_as = format if format in formats.CONTENT_TYPES else "json"
    body = formats.render(renders_as, request_id, [SEED_DETAIL])
    await db.execute(
        """
        INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                oldest_click_at)
        VALUES ($1, $2, $3, $4, 1, now())
        """,
        request_id,
        endpoint_id,
        format,
        body,
    )
    return request_id


async def delivery(db: asyncpg.Connection, request_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "SELECT * FROM deliveries WHERE request_identifier = $1", request_id
    )
    return row


async def wait_for_row(
    db: asyncpg.Connection, query: str, *args: object, within: float = 30.0
) -> asyncpg.Record:
    """Poll `query` until it returns a row."""
    found: list[asyncpg.Record] = []

    async def row() -> bool:
        found[:] = [r for r in [await db.fetchrow(query, *args)] if r is not None]
        return bool(found)

    await wait_until(row, within=within, what="a row")
    return found[0]


# -- point 8: the format a delivery was made in -----------------------------------


async def test_clicks_waiting_when_the_endpoint_switches_to_clickthru_arrive_as_json(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Clicks in the outbox for json stay one json batch after a switch to clickthru, and
    later first clicks arrive as clickthru events: the loop never stops."""
    env = {**forwarder_env, "DELIVERY_LINGER_MS": "2000"}
    await set_endpoint(db, account_id, sink.url, format="json")
    async with running(create_app(ForwarderConfig.from_env(env))) as server:
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 3)))
        await wait_for_row(
            db,
            """
            SELECT 1 FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id
            WHERE e.account_id = $1 HAVING count(*) = 3
            """,
            account_id,
        )
        await set_endpoint(db, account_id, sink.url, format="clickthru")
        await wait_until(lambda: len(sink.received) == 1)
        batch = sink.received[0]
        assert batch.headers["Content-Type"] == "application/json; charset=utf-8"
        assert len(orjson.loads(batch.body)["ClickDetails"]) == 3
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
        await wait_until(lambda: len(sink.received) == 3)
        for event in sink.received[1:]:
            assert event.headers["Content-Type"] == "application/json; charset=utf-8"
            assert orjson.loads(event.body)["event"]["fld-val-list"]["new_state"] == "CLICKTHRU"
        assert server.app[SUPERVISOR].restarts["deliverer"] == 0
    rows = await deliveries_of(db, account_id)
    assert [(r["format"], r["clicks"], r["status"]) for r in rows] == [
        ("json", 3, "delivered"),
        ("clickthru", 1, "delivered"),
        ("clickthru", 1, "delivered"),
    ]


async def test_clicks_waiting_for_xml_are_not_swept_into_a_json_batch(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """After a switch from xml to json, the waiting clicks go as XML, the new ones as JSON."""
    env = {**forwarder_env, "DELIVERY_LINGER_MS": "2000"}
    await set_endpoint(db, account_id, sink.url, format="xml")
    async with running(create_app(ForwarderConfig.from_env(env))):
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
        await wait_for_row(
            db,
            """
            SELECT 1 FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id
            WHERE e.account_id = $1 HAVING count(*) = 2
            """,
            account_id,
        )
        await set_endpoint(db, account_id, sink.url, format="json")
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 1)))
        await wait_until(lambda: len(sink.received) == 2)
    by_type = {r.headers["Content-Type"]: r.body for r in sink.received}
    xml = ET.fromstring(by_type["application/xml; charset=utf-8"])
    assert len(xml.findall("ClickDetails/ClickDetail")) == 2
    assert len(orjson.loads(by_type["application/json; charset=utf-8"])["ClickDetails"]) == 1


async def test_a_pending_delivery_is_retried_in_the_format_it_was_made_in(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A json batch that failed is retried as json after the endpoint switched to xml."""
    sink.script = [500]
    env = {**forwarder_env, "DELIVERY_RETRY_BASE_SECONDS": "2"}
    await set_endpoint(db, account_id, sink.url, format="json")
    async with running(create_app(ForwarderConfig.from_env(env))):
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
        await wait_until(lambda: len(sink.received) == 1)
        await set_endpoint(db, account_id, sink.url, format="xml")
        await wait_until(lambda: len(sink.received) == 2)
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 1)))
        await wait_until(lambda: len(sink.received) == 3)
    first, retried, later = sink.received
    assert retried.headers["Content-Type"] == "application/json; charset=utf-8"
    assert retried.body == first.body
    assert retried.headers["X-Request-Identifier"] == first.headers["X-Request-Identifier"]
    assert later.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert later.body.startswith(b"<?xml")


# -- point 9: no attempt escapes being counted -------------------------------------


def test_malformed_retry_after_values_are_ignored() -> None:
    """Retry-After that is neither ASCII digits nor an HTTP date gives None (the backoff)."""
    for value in ("\u00b2", "\u0663", "1e3", "-5", "1.5", "nan", "inf", "Wed, 99 Foo", "", None):
        assert parse_retry_after(value) is None, value
    assert parse_retry_after(" 120 ") == 120
    assert parse_retry_after("9" * 400) is not None  # huge but digits: capped by retry_delay


async def test_a_malformed_retry_after_still_counts_the_attempt(
    forwarder_env: dict[str, str],
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """`Retry-After: ²` with a 503 is a failed attempt like any other: dead after the last."""
    sink.status = 503
    sink.headers = {"Retry-After": "\u00b2"}
    env = {**forwarder_env, "DELIVERY_MAX_ATTEMPTS": "3", "DELIVERY_RETRY_BASE_SECONDS": "0.05"}
    await set_endpoint(db, account_id, sink.url)
    async with running(create_app(ForwarderConfig.from_env(env))) as forwarder:
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 1)))
        row = await wait_for_row(
            db,
            """
            SELECT d.* FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
            WHERE e.account_id = $1 AND d.status = 'dead'
            """,
            account_id,
        )
        await settled(forwarder, db, account_id, received=1)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (3, 503, "HTTP 503")
    assert len(sink.received) == 3


async def test_a_delivery_that_cannot_be_sent_becomes_a_dead_letter(
    forwarder_env: dict[str, str], sink: Sink, db: asyncpg.Connection, account_id: int
) -> None:
    """An error while making an attempt is a counted failed attempt; the loop goes on."""
    env = {**forwarder_env, "DELIVERY_MAX_ATTEMPTS": "2", "DELIVERY_RETRY_BASE_SECONDS": "0.05"}
    await set_endpoint(db, account_id, sink.url)
    endpoint = await endpoint_of(db, account_id)
    poison = await add_delivery(db, endpoint, format="yaml")  # no such format
    supervisor = Supervisor("forwarder")
    async with deliverer_running(env, supervisor) as deliverer:
        row = await wait_for_row(
            db,
            "SELECT * FROM deliveries WHERE request_identifier = $1 AND status = 'dead'",
            poison,
        )
        assert row["attempts"] == 2
        assert "internal error: KeyError('yaml')" in row["last_error"]
        assert deliverer.unexpected_errors == 2
        assert supervisor.restarts["deliverer"] == 2
        healthy = await add_delivery(db, endpoint)
        await wait_until(lambda: len(sink.received) == 1)
    assert (await delivery(db, healthy))["status"] == "delivered"
    assert sink.received[0].headers["X-Request-Identifier"] == healthy


@dataclass
class Endless:
    """A customer endpoint answering 200 with a body that never ends: it writes until the
    client drops the connection, counting what it wrote."""

    written: int = 0
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65_536
        try:
            while True:
                await response.write(chunk)
                self.written += len(chunk)
        except ConnectionError:
            self.dropped.set()
        except asyncio.CancelledError:  # the server's way of ending a lost connection's handler
            self.dropped.set()
            raise
        return response


async def test_an_endless_answer_is_read_up_to_64_kib_then_its_connection_dropped(
    forwarder_env: dict[str, str],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    db: asyncpg.Connection,
    account_id: int,
) -> None:
    """A 2xx with an endless body is delivered: 64 KiB are read, then the connection is dropped."""
    endless = Endless()
    app = web.Application()
    app.router.add_post("/hook", endless.handle)
    server = await aiohttp_server(app)
    await set_endpoint(db, account_id, str(server.make_url("/hook")))
    env = {**forwarder_env, "DELIVERY_TIMEOUT_SECONDS": "5"}
    async with deliverer_running(env):
        request_id = await add_delivery(db, await endpoint_of(db, account_id))
        row = await wait_for_row(
            db,
            "SELECT * FROM deliveries WHERE request_identifier = $1 AND status = 'delivered'",
            request_id,
        )
        await asyncio.wait_for(endless.dropped.wait(), timeout=30)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (1, 200, None)
    # What the endpoint could write before its writes failed is what the sockets buffer,
    # not the gigabytes an endless body reaches.
    assert endless.written < 32 << 20


async def test_a_click_that_cannot_be_rendered_becomes_a_dead_letter(
    forwarder_env: dict[str, str], sink: Sink, db: asyncpg.Connection, account_id: int
) -> None:
    """A waiting click that cannot be rendered is kept as a dead letter; the others go."""
    await set_endpoint(db, account_id, sink.url)
    endpoint = await endpoint_of(db, account_id)
    await db.execute(
        """
        INSERT INTO outbox (endpoint_id, format, event_id, detail)
        VALUES ($1, 'json', $2, $3), ($1, 'json', $4, $5)
        """,
        endpoint,
        uuid.uuid4(),
        formats.encode_detail(SEED_DETAIL),
        uuid.uuid4(),
        b'{"TrackingUrlId": 7}',  # written by some other version: fields missing
    )
    async with deliverer_running(forwarder_env):
        await wait_until(lambda: len(sink.received) == 1)
        [dead] = await db.fetch(
            "SELECT * FROM deliveries WHERE endpoint_id = $1 AND status = 'dead'", endpoint
        )
    assert len(orjson.loads(sink.received[0].body)["ClickDetails"]) == 1
    assert dead["body"] == b'{"TrackingUrlId": 7}'
    assert dead["last_error"].startswith("cannot render this click as json: KeyError(")
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE endpoint_id = $1", endpoint) == 0


# -- point 10: one sender per endpoint, and only the holder settles -----------------


async def test_a_deliverer_whose_lease_was_taken_settles_nothing(
    forwarder_env: dict[str, str], gate: Gate, db: asyncpg.Connection, account_id: int
) -> None:
    """A process that lost the lease mid-request neither records the outcome nor sends more."""
    await set_endpoint(db, account_id, gate.url)
    endpoint = await endpoint_of(db, account_id)
    first, second = await add_delivery(db, endpoint), await add_delivery(db, endpoint)
    async with deliverer_running(forwarder_env) as deliverer:
        await wait_until(lambda: len(gate.arrived) == 1)
        await db.execute(
            """
            UPDATE endpoints SET lease_owner = 'another-process',
                                 lease_until = now() + interval '1 minute'
            WHERE id = $1
            """,
            endpoint,
        )
        gate.opened.set()
        await wait_until(lambda: deliverer.leases_lost == 1)
        for request_id in (first, second):
            row = await delivery(db, request_id)
            assert (row["status"], row["attempts"]) == ("pending", 0)
        assert gate.arrived == [first]
        assert deliverer.delivered == 0
        await db.execute(
            "UPDATE endpoints SET lease_owner = NULL, lease_until = NULL WHERE id = $1", endpoint
        )
        await wait_until(lambda: deliverer.delivered == 2)
    assert gate.arrived == [first, first, second]
    assert (await delivery(db, first))["attempts"] == 1


async def test_two_deliverers_and_an_expired_lease_settle_a_delivery_once(
    forwarder_env: dict[str, str], gate: Gate, db: asyncpg.Connection, account_id: int
) -> None:
    """When a lease expired under a request and another process took it, only the new
    holder records the delivery."""
    await set_endpoint(db, account_id, gate.url)
    endpoint = await endpoint_of(db, account_id)
    request_id = await add_delivery(db, endpoint)
    async with deliverer_running(forwarder_env) as stalled:
        await wait_until(lambda: len(gate.arrived) == 1)
        # As far as the database knows, the first process let its lease run out.
        await db.execute(
            "UPDATE endpoints SET lease_until = now() - interval '1 second' WHERE id = $1",
            endpoint,
        )
        async with deliverer_running(forwarder_env) as taker:
            await wait_until(lambda: len(gate.arrived) == 2)
            gate.opened.set()
            await wait_until(lambda: taker.delivered == 1 and stalled.leases_lost == 1)
            assert stalled.delivered == 0
    assert gate.arrived == [request_id, request_id]
    row = await delivery(db, request_id)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_two_deliverers_never_have_two_requests_in_flight(
    forwarder_env: dict[str, str], gate: Gate, db: asyncpg.Connection, account_id: int
) -> None:
    """With requests lasting most of the timeout and a short lease, renewals keep one
    process sending at a time."""
    gate.hold = 0.8  # six of them outlast the lease
    env = {**forwarder_env, "DELIVERY_LEASE_SECONDS": "4", "DELIVERY_TIMEOUT_SECONDS": "2"}
    await set_endpoint(db, account_id, gate.url)
    endpoint = await endpoint_of(db, account_id)
    request_ids = [await add_delivery(db, endpoint) for _ in range(6)]
    async with deliverer_running(env) as first, deliverer_running(env) as second:
        await wait_until(lambda: first.delivered + second.delivered == 6, within=60)
    assert gate.most_in_flight == 1
    assert sorted(gate.arrived) == sorted(request_ids)
    for request_id in request_ids:
        assert (await delivery(db, request_id))["attempts"] == 1


# -- point 11: the address aiohttp would connect to --------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
        "127\u30020\u30020\u30021",  # ideographic full stops
        "[::ffff:127.0.0.1]",
        "2130706433",  # 127.0.0.1 to the system; stored before the API refused it
        "127.1",
    ],
)
async def test_a_disguised_private_address_is_refused_at_connect_time(
    forwarder_env: dict[str, str], sink: Sink, db: asyncpg.Connection, account_id: int, host: str
) -> None:
    """An endpoint stored while private addresses were allowed is not called once they are
    not, however its host is written."""
    await set_endpoint(db, account_id, sink.url)
    endpoint = await endpoint_of(db, account_id)
    port = int(sink.url.rsplit(":", 1)[1].split("/")[0])
    await db.execute(
        "UPDATE endpoints SET url = $2 WHERE id = $1", endpoint, f"http://{host}:{port}/hook"
    )
    request_id = await add_delivery(db, endpoint)
    env = {**forwarder_env, "ALLOW_PRIVATE_ENDPOINTS": "false", "DELIVERY_MAX_ATTEMPTS": "1"}
    async with deliverer_running(env):
        row = await wait_for_row(
            db,
            "SELECT * FROM deliveries WHERE request_identifier = $1 AND status = 'dead'",
            request_id,
        )
    assert row["last_error"].startswith("refused: ")
    assert sink.received == []


# -- issue 13: conversions and per-message callbacks ---------------------------------

Post = Callable[[str, dict[str, object]], Awaitable[tuple[int, Any]]]


@contextlib.asynccontextmanager
async def api_as(database_url: str, key: str) -> AsyncIterator[Post]:
    """The API on a free port, and a function that POSTs to it with `key`."""
    from shortlink.api.app import create_app as create_api
    from shortlink.api.config import ApiConfig

    env = {
        "DATABASE_URL": database_url,
        "SHORT_DOMAIN": "sl.test",
        "DATABASE_POOL_SIZE": "3",
        "ALLOW_PRIVATE_ENDPOINTS": "true",
    }
    async with (
        running(create_api(ApiConfig.from_env(env))) as server,
        aiohttp.ClientSession() as session,
    ):

        async def post(path: str, body: dict[str, object]) -> tuple[int, Any]:
            async with session.post(
                server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}
            ) as response:
                return response.status, await response.json()

        yield post


async def entries(db: asyncpg.Connection, made: list[dict[str, Any]]) -> list[LinkEntry]:
    """The links an API answer made, as the redirect server has them."""
    found = [await fetch_entry(db, link["token"]) for link in made]
    assert all(found)
    return [entry for entry in found if entry is not None]


async def test_conversions_reach_an_endpoint_that_asked_for_them_signed_and_retried(
    forwarder: RunningServer,
    make_sink: Callable[[], Awaitable[Sink]],
    database_url: str,
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A posted conversion is POSTed by the forwarder as a CONVERTED event beside the
    CLICKTHRU, signed, and retried with the same identifier; an endpoint that did not
    ask for conversions gets none."""
    sink, quiet = await make_sink(), await make_sink()
    account = await create_account(db, "converts")
    other = await create_account(db, "does-not")
    await set_endpoint(
        db, account.account_id, sink.url, format="clickthru", secret=SECRET, conversions=True
    )
    await set_endpoint(db, other.account_id, quiet.url, format="clickthru")
    async with api_as(database_url, account.api_key) as post:
        status, made = await post(
            "/v1/links",
            {
                "url": "https://shop.example/c",
                "client_identifier": "conv",
                "recipients": [{"phone_number": "447700900123", "client_ref": "m1"}],
            },
        )
        assert status == 201
        [link] = await entries(db, made["links"])
        await publish(kafka_bootstrap, click_topic, clicks([link]))
        await wait_until(lambda: len(sink.received) == 1)
        sink.script = [500, 200]
        status, conversion = await post(
            "/v1/conversions",
            {
                "token": link.token,
                "event": "purchase",
                "disposition": "positive",
                "value": 42.5,
                "currency": "GBP",
                "metadata": {"order": 7},
            },
        )
        assert status == 201
    async with api_as(database_url, other.api_key) as post:
        [other_link] = (await post("/v1/links", {"url": "https://shop.example/o"}))[1]["links"]
        assert (
            await post(
                "/v1/conversions",
                {"token": other_link["token"], "event": "purchase", "disposition": "positive"},
            )
        )[0] == 201
    await wait_until(lambda: len(sink.received) == 3)
    clickthru, *tries = sink.received
    assert orjson.loads(clickthru.body)["event"]["fld-val-list"]["new_state"] == "CLICKTHRU"
    assert [orjson.loads(r.body)["attempt"] for r in tries] == [1, 2]
    assert len({r.headers["X-Request-Identifier"] for r in tries}) == 1
    payload = Webhook(SECRET).verify(tries[1].body, tries[1].headers)
    fields = payload["event"]["fld-val-list"]
    assert fields == {
        "previous_state": "CLICKTHRU",
        "new_state": "CONVERTED",
        "message_id": "m1",
        "message_request_id": tries[1].headers["X-Request-Identifier"],
        "to_address": "+447700900123",
        "tracked_url": "https://shop.example/c",
        "tracking_url_id": link.id,
        "client_identifier": "conv",
        "conversion_id": conversion["conversion_id"],
        "event": "purchase",
        "disposition": "positive",
        "value": 42.5,
        "currency": "GBP",
        "occurred_at": fields["occurred_at"],
        "seconds_since_first_click": conversion["seconds_since_first_click"],
        "metadata": {"order": 7},
        "reason_code": "200",
        "reason_description": "SUCCESS",
    }
    assert fields["occurred_at"].endswith("Z")
    assert payload["topic"] == "SCG-Message"
    assert tries[0].headers["Content-Type"] == "application/json; charset=utf-8"
    await settled(forwarder, db, other.account_id)
    assert quiet.received == []


async def test_a_conversion_that_cannot_be_delivered_is_a_dead_letter(
    forwarder_env: dict[str, str],
    sink: Sink,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    """A conversion event the endpoint keeps refusing becomes a dead letter after the last
    attempt, listed with the account's deliveries, and can be sent again."""
    sink.status = 503
    account = await create_account(db, "dead-conversions")
    await set_endpoint(db, account.account_id, sink.url, format="json", conversions=True)
    env = {**forwarder_env, "DELIVERY_MAX_ATTEMPTS": "3", "DELIVERY_RETRY_BASE_SECONDS": "0.05"}
    async with running(create_app(ForwarderConfig.from_env(env))):
        async with api_as(database_url, account.api_key) as post:
            [made] = (await post("/v1/links", {"url": "https://shop.example/d"}))[1]["links"]
            status, _ = await post(
                "/v1/conversions",
                {"token": made["token"], "event": "refusal", "disposition": "negative"},
            )
            assert status == 201
        await wait_until(lambda: len(sink.received) == 3)
        [dead] = await wait_for_rows(db, account.account_id, "dead")
        assert (dead["format"], dead["attempts"], dead["clicks"]) == ("conversion", 3, 0)
        listed = await list_deliveries(db, account.account_id, status="dead")
        assert [d["format"] for d in listed] == ["conversion"]
        assert listed[0]["callback_url"] is None
        sink.status = 200
        assert await retry_dead(db, account.account_id) == 1
        await wait_until(lambda: len(sink.received) == 4)
    event = orjson.loads(sink.received[-1].body)["event"]["fld-val-list"]
    assert (event["new_state"], event["previous_state"]) == ("CONVERTED", "DELIVERED")
    assert event["seconds_since_first_click"] is None


async def wait_for_rows(
    db: asyncpg.Connection, account_id: int, status: str, count: int = 1
) -> list[asyncpg.Record]:
    """Poll until the account has `count` deliveries (callbacks included) in `status`."""
    rows: list[asyncpg.Record] = []

    async def enough() -> bool:
        rows[:] = await db.fetch(
            """
            SELECT d.* FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
            WHERE (e.account_id = $1 OR e.callback_account_id = $1) AND d.status = $2
            ORDER BY d.created_at
            """,
            account_id,
            status,
        )
        return len(rows) >= count

    await wait_until(enough, what=f"{count} {status} deliveries")
    return rows


async def test_a_callback_url_gets_each_first_tap_signed_apart_from_the_endpoint(
    forwarder: RunningServer,
    make_sink: Callable[[], Awaitable[Sink]],
    database_url: str,
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """The first human tap of each link made with a callback_url is POSTed there once, as
    a CLICKTHRU event signed with the account's secret; the account's endpoint still gets
    every click; links of another request without it call nothing."""
    endpoint, callback = await make_sink(), await make_sink()
    account = await create_account(db, "callbacks")
    await set_endpoint(db, account.account_id, endpoint.url, format="json", secret=SECRET)
    async with api_as(database_url, account.api_key) as post:
        status, made = await post(
            "/v1/messages",
            {
                "to": ["447700900001", "447700900002"],
                "body": 'Hi #track("https://e.example/x")',
                "callback_url": callback.url,
            },
        )
        assert status == 201
        tapped = await entries(db, [m["links"][0] for m in made["messages"]])
        status, plain = await post("/v1/links", {"url": "https://e.example/plain"})
        assert status == 201
        untracked = await entries(db, plain["links"])
        status, _ = await post(
            "/v1/links", {"url": "https://e.example/y", "callback_url": callback.url}
        )
        assert status == 201
    await publish(
        kafka_bootstrap,
        click_topic,
        clicks(tapped) + clicks(tapped, user_agent="WhatsApp/2.23.20.0 A") + clicks(untracked),
    )
    await wait_until(lambda: len(callback.received) == 2)
    await publish(kafka_bootstrap, click_topic, clicks(tapped))
    await wait_until(
        lambda: sum(len(orjson.loads(r.body)["ClickDetails"]) for r in endpoint.received) == 5
    )
    await settled(forwarder, db, account.account_id, received=7)
    assert len(callback.received) == 2
    events = [Webhook(SECRET).verify(r.body, r.headers) for r in callback.received]
    fields = [event["event"]["fld-val-list"] for event in events]
    assert {f["new_state"] for f in fields} == {"CLICKTHRU"}
    assert {f["tracking_url_id"] for f in fields} == {link.id for link in tapped}
    assert {f["to_address"] for f in fields} == {"+447700900001", "+447700900002"}
    rows = await db.fetch(
        "SELECT callback_id FROM links WHERE id = ANY($1::bigint[])",
        [link.id for link in tapped + untracked],
    )
    assert len({r["callback_id"] for r in rows}) == 2  # the callback, and NULL
    one = await db.fetchval(
        "SELECT count(*) FROM endpoints WHERE callback_account_id = $1", account.account_id
    )
    assert one == 1  # one destination per distinct URL, however many requests name it


async def test_a_dead_callback_never_delays_the_accounts_endpoint(
    forwarder_env: dict[str, str],
    make_sink: Callable[[], Awaitable[Sink]],
    database_url: str,
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """A callback that never answers 2xx is tried DELIVERY_MAX_ATTEMPTS (10) times and then
    kept as a dead letter, while the account's endpoint gets its clicks at once."""
    endpoint, callback = await make_sink(), await make_sink()
    callback.status = 500
    account = await create_account(db, "dead-callback")
    await set_endpoint(db, account.account_id, endpoint.url, format="clickthru")
    env = {
        **forwarder_env,
        "DELIVERY_RETRY_BASE_SECONDS": "0.05",
        "DELIVERY_RETRY_MAX_SECONDS": "0.2",
    }
    async with running(create_app(ForwarderConfig.from_env(env))):
        async with api_as(database_url, account.api_key) as post:
            status, made = await post(
                "/v1/links", {"url": "https://e.example/z", "callback_url": callback.url}
            )
            assert status == 201
        [link] = await entries(db, made["links"])
        await publish(kafka_bootstrap, click_topic, clicks([link]))
        await wait_until(lambda: len(endpoint.received) == 1 and len(callback.received) >= 1)
        [dead] = await wait_for_rows(db, account.account_id, "dead")
    assert len(callback.received) == 10
    assert (dead["attempts"], dead["last_error"]) == (10, "HTTP 500")
    listed = await list_deliveries(db, account.account_id, status="dead")
    assert [d["callback_url"] for d in listed] == [callback.url]


# -- issue 21: what PostgreSQL refuses for one endpoint never holds up another ----------


async def wait_in_outbox(db: asyncpg.Connection, endpoint_id: int, count: int) -> None:
    """`count` clicks waiting for the endpoint, as the recorder leaves them."""
    await db.executemany(
        "INSERT INTO outbox (endpoint_id, format, event_id, detail) VALUES ($1, 'json', $2, $3)",
        [(endpoint_id, uuid.uuid4(), formats.encode_detail(SEED_DETAIL)) for _ in range(count)],
    )


@pytest.fixture
async def two_endpoints(
    db: asyncpg.Connection, make_sink: Callable[[], Awaitable[Sink]]
) -> AsyncIterator[tuple[tuple[int, Sink], tuple[int, Sink]]]:
    """Two accounts' endpoints, the refused one made first (the lower id, batched first);
    three clicks wait for each. The CHECK a test adds to deliveries is dropped after it."""
    pair = []
    for name in ("refused", "fine"):
        account = (await create_account(db, name)).account_id
        sink = await make_sink()
        await set_endpoint(db, account, sink.url)
        endpoint = await endpoint_of(db, account)
        await wait_in_outbox(db, endpoint, 3)
        pair.append((endpoint, sink))
    yield pair[0], pair[1]
    await db.execute("ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS test_refused")
    await db.execute("DELETE FROM outbox WHERE endpoint_id = $1", pair[0][0])


async def test_clicks_postgresql_will_not_take_as_a_batch_become_dead_letters_alone(
    forwarder_env: dict[str, str],
    db: asyncpg.Connection,
    two_endpoints: tuple[tuple[int, Sink], tuple[int, Sink]],
) -> None:
    """A batch that violates a CHECK of deliveries is stored click by click as dead
    letters holding the error (sent once retried); the other endpoint's batch goes."""
    (refused, refused_sink), (_, fine_sink) = two_endpoints
    await db.execute(
        "ALTER TABLE deliveries ADD CONSTRAINT test_refused"
        f" CHECK (status <> 'pending' OR endpoint_id <> {refused}) NOT VALID"
    )
    supervisor = Supervisor("forwarder")
    async with deliverer_running(forwarder_env, supervisor) as deliverer:
        await wait_until(lambda: len(fine_sink.received) == 1)
        await wait_until(lambda: deliverer._outbox.unrenderable == 3)
        dead = await db.fetch(
            "SELECT * FROM deliveries WHERE endpoint_id = $1 AND status = 'dead'", refused
        )
        assert supervisor.healthy
    assert len(orjson.loads(fine_sink.received[0].body)["ClickDetails"]) == 3
    assert [row["clicks"] for row in dead] == [1, 1, 1]
    assert all("CheckViolationError" in row["last_error"] for row in dead)
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE endpoint_id = $1", refused) == 0
    await db.execute("ALTER TABLE deliveries DROP CONSTRAINT test_refused")
    account = await db.fetchval("SELECT account_id FROM endpoints WHERE id = $1", refused)
    assert await retry_dead(db, account) == 3
    async with deliverer_running(forwarder_env):
        await wait_until(lambda: len(refused_sink.received) == 3)
    assert [len(orjson.loads(r.body)["ClickDetails"]) for r in refused_sink.received] == [1, 1, 1]


async def test_clicks_postgresql_refuses_even_as_dead_letters_wait_apart(
    forwarder_env: dict[str, str],
    db: asyncpg.Connection,
    two_endpoints: tuple[tuple[int, Sink], tuple[int, Sink]],
) -> None:
    """Clicks no delivery row of their endpoint can hold stay in the outbox, held back,
    while the other endpoint's are delivered; once the cause is gone they go too."""
    (refused, refused_sink), (_, fine_sink) = two_endpoints
    await db.execute(
        f"ALTER TABLE deliveries ADD CONSTRAINT test_refused CHECK (endpoint_id <> {refused})"
        " NOT VALID"
    )
    supervisor = Supervisor("forwarder")
    async with deliverer_running(forwarder_env, supervisor) as deliverer:
        await wait_until(lambda: len(fine_sink.received) == 1)
        await wait_until(lambda: deliverer._outbox.stuck >= 3)
        assert await db.fetchval("SELECT count(*) FROM outbox WHERE endpoint_id = $1", refused) == 3
        assert supervisor.healthy
        await db.execute("ALTER TABLE deliveries DROP CONSTRAINT test_refused")
        await wait_until(lambda: len(refused_sink.received) == 1)
    assert len(orjson.loads(refused_sink.received[0].body)["ClickDetails"]) == 3
