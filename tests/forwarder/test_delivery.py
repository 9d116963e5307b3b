"""Delivering to a real customer endpoint on 127.0.0.1: batches, formats, retries, TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import trustme
from aiohttp import web
from standardwebhooks import Webhook

from forwarder.app import create_app
from forwarder.config import ForwarderConfig
from forwarder.delivery import parse_retry_after, retry_delay
from shortlink import clickevent
from shortlink.deliveries import retry_dead
from shortlink.endpoints import PrivateAddressError
from shortlink.endpoints import set_endpoint as store_endpoint
from tests.forwarder.conftest import Sink, clicks, make_links, publish, set_endpoint
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


async def test_250_clicks_arrive_as_100_100_50_with_every_field(
    forwarder: RunningServer,
    sink: Sink,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """250 clicks reach the endpoint as three POSTs of 100, 100 and 50 ClickDetails."""
    await set_endpoint(db, account_id, sink.url)
    links = await make_links(db, account_id, 250)
    values = clicks(links)
    await publish(kafka_bootstrap, click_topic, values)
    await wait_until(
        lambda: sum(len(orjson.loads(r.body)["ClickDetails"]) for r in sink.received) >= 250
    )
    await asyncio.sleep(0.5)
    bodies = [orjson.loads(r.body) for r in sink.received]
    assert sorted((len(b["ClickDetails"]) for b in bodies), reverse=True) == [100, 100, 50]
    assert len({b["RequestIdentifier"] for b in bodies}) == 3
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
    await wait_until(lambda: True)
    row = await db.fetchrow(
        "SELECT status, attempts FROM deliveries WHERE request_identifier = $1",
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

    deadline = time.monotonic() + 10
    while not await disabled():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert row is not None
    assert "410" in row["disabled_reason"]
    await asyncio.sleep(1)
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
    async with running(create_app(ForwarderConfig.from_env(env))):
        await publish(kafka_bootstrap, click_topic, clicks(await make_links(db, account_id, 2)))
        await wait_until(lambda: len(sink.received) == 3)
        await asyncio.sleep(0.5)
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

        deadline = time.monotonic() + 15
        while not await dead():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
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

            deadline = time.monotonic() + 15
            while not await settled():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        [refused] = await deliveries_of(db, bad)
        assert refused["last_error"].startswith("TLS")
        assert untrusted.received == []
    finally:
        await untrusted_runner.cleanup()
        await trusted_runner.cleanup()
