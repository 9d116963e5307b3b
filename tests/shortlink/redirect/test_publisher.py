"""Click publishing through broker outages: the spool keeps every click."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shortlink import clickevent
from shortlink.dev import embedded
from shortlink.kafka import ensure_topic
from shortlink.links import NewLink, create_links
from shortlink.redirect.app import create_app, make_handler
from shortlink.redirect.cache import CACHE
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.entries import LinkGroup
from shortlink.redirect.publisher import PUBLISHER, _Outgoing
from shortlink.redirect.spool import Spool
from shortlink.supervise import SUPERVISOR
from tests.infra import RunningServer, consume, running, wait_until

TOPIC = "clicks"


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[embedded.Broker]:
    """A tansu broker this test may stop and start again."""
    broker = embedded.Broker("127.0.0.1", embedded.free_port(), tmp_path / "tansu.log")
    broker.start()
    yield broker
    broker.stop()


async def click(session: aiohttp.ClientSession, url: str, agent: str) -> int:
    async with session.get(url, headers={"User-Agent": agent}, allow_redirects=False) as r:
        return r.status


async def test_broker_outage_loses_no_click(
    own_broker: embedded.Broker,
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    tmp_path: Path,
) -> None:
    """Clicks made while the broker is down are spooled, then all arrive once it is back."""
    await ensure_topic(own_broker.bootstrap_servers, TOPIC, 3)
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = RedirectConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
            "CLICK_TOPIC": TOPIC,
            "SPOOL_DIR": str(tmp_path / "spool"),
            "PUBLISH_LINGER_MS": "5",
            "KAFKA_REQUEST_TIMEOUT_MS": "1000",
        }
    )
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        url = f"{server.url}/{link.token}"
        async with aiohttp.ClientSession() as session:
            assert await click(session, url, "before") == 302
            await wait_until(lambda: publisher.published == 1)

            own_broker.stop()
            statuses = [await click(session, url, f"outage-{i}") for i in range(30)]
            assert statuses == [302] * 30  # redirects never wait for Kafka
            await wait_until(lambda: publisher.spooled == 30)
            assert publisher.spooling
            assert (tmp_path / "spool" / "redirect-0.spool").stat().st_size > 0

            own_broker.start()  # an in-memory broker: it comes back empty
            await ensure_topic(own_broker.bootstrap_servers, TOPIC, 3)
            await wait_until(lambda: not publisher.spooling, within=60)
            assert publisher.replayed == 30
            assert await click(session, url, "after") == 302

    records = await consume(own_broker.bootstrap_servers, TOPIC, 31, to_end=True)
    agents = sorted(clickevent.decode(r.value).user_agent or "" for r in records)
    assert agents == sorted([f"outage-{i}" for i in range(30)] + ["after"])
    assert len({clickevent.decode(r.value).event_id for r in records}) == 31
    assert (tmp_path / "spool" / "redirect-0.spool").stat().st_size == 0


async def test_broker_down_at_start_spools_then_replays(
    database_url: str, db: asyncpg.Connection, account_id: int, tmp_path: Path
) -> None:
    """A server started while the broker is unreachable redirects, spools, and replays later."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    broker = embedded.Broker("127.0.0.1", embedded.free_port(), tmp_path / "tansu.log")
    config = RedirectConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CLICK_TOPIC": TOPIC,
            "SPOOL_DIR": str(tmp_path / "spool"),
            "KAFKA_REQUEST_TIMEOUT_MS": "500",
        }
    )
    try:
        async with running(create_app(config), make_handler) as server:
            publisher = server.app[PUBLISHER]
            async with aiohttp.ClientSession() as session:
                for i in range(5):
                    assert await click(session, f"{server.url}/{link.token}", f"early-{i}") == 302
            await wait_until(lambda: publisher.spooled == 5)
            # Not ready while the broker is down, unless the probe says it is optional.
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/readyz") as strict:
                    assert strict.status == 503
                    assert (await strict.json())["broker"] == "unreachable"
                async with session.get(f"{server.url}/readyz?broker=optional") as lenient:
                    assert lenient.status == 200
                    assert (await lenient.json())["spooling"] is True
            broker.start()
            await ensure_topic(broker.bootstrap_servers, TOPIC, 3)
            await wait_until(lambda: publisher.replayed == 5, within=60)
        records = await consume(broker.bootstrap_servers, TOPIC, 5, to_end=True)
        assert sorted(clickevent.decode(r.value).user_agent or "" for r in records) == [
            f"early-{i}" for i in range(5)
        ]
    finally:
        broker.stop()


async def test_full_spool_is_loud_and_redirects_go_on(
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full spool counts and logs dropped clicks, and redirects still work."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    unreachable = f"127.0.0.1:{embedded.free_port()}"
    config = RedirectConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": unreachable,
            "CLICK_TOPIC": TOPIC,
            "SPOOL_DIR": str(tmp_path / "spool"),
            "SPOOL_MAX_BYTES": "1024",
            "KAFKA_REQUEST_TIMEOUT_MS": "200",
        }
    )
    caplog.set_level(logging.ERROR, logger="shortlink.redirect.publisher")
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/{link.token}"
            statuses = [await click(session, url, f"agent-{i}") for i in range(20)]
        assert statuses == [302] * 20
        await wait_until(lambda: publisher.spooled + publisher.dropped == 20)
        assert publisher.dropped > 0
        assert publisher.spool_bytes <= 1024
    assert any("spool is full" in r.getMessage() for r in caplog.records)


BAD_AGENT = b"Mozilla/5.0 \xff\xfe"
BAD_REFERER = b"https://sms.example/\xc3\x28"


async def raw_tap(port: int, path: str, headers: bytes = b"") -> int:
    """One GET over a raw socket, so header bytes reach the server exactly as written."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n"
            % (path.encode(), headers)
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_undecodable_headers_are_kept_and_the_flusher_lives_on(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Taps whose User-Agent or Referer is not UTF-8 are published with U+FFFD, and so is
    every later click of the worker."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    path = f"/{link.token}"
    bad = b"User-Agent: %s\r\nReferer: %s\r\n" % (BAD_AGENT, BAD_REFERER)
    statuses = [await raw_tap(redirect_server.port, path, bad) for _ in range(4)]
    statuses += [
        await raw_tap(redirect_server.port, path, b"User-Agent: after-%d\r\n" % i)
        for i in range(10)
    ]
    assert statuses == [302] * 14
    events = [clickevent.decode(r.value) for r in await consume(kafka_bootstrap, click_topic, 14)]
    agents = sorted(e.user_agent or "" for e in events)
    assert agents == sorted(["Mozilla/5.0 \ufffd\ufffd"] * 4 + [f"after-{i}" for i in range(10)])
    assert {e.referer for e in events if e.user_agent.startswith("Mozilla")} == {  # type: ignore[union-attr]
        "https://sms.example/\ufffd("
    }


def broker_away_config(database_url: str, tmp_path: Path) -> RedirectConfig:
    """A redirect server whose broker is not there, with a buffer of 2 clicks that only
    spilling empties (a linger of a minute) and its spool under `tmp_path`."""
    return RedirectConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{embedded.free_port()}",
            "CLICK_TOPIC": TOPIC,
            "SPOOL_DIR": str(tmp_path / "spool"),
            "PUBLISH_BUFFER_EVENTS": "2",
            "PUBLISH_LINGER_MS": "60000",
            "KAFKA_REQUEST_TIMEOUT_MS": "200",
        }
    )


async def test_undecodable_headers_spill_and_shut_down_into_the_spool(
    database_url: str, db: asyncpg.Connection, account_id: int, tmp_path: Path
) -> None:
    """With Kafka away and the buffer at its limit, such taps still get 302 and are spooled,
    and so is what is buffered at shutdown."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_away_config(database_url, tmp_path)
    async with running(create_app(config), make_handler) as server:
        bad = b"User-Agent: %s\r\n" % BAD_AGENT
        statuses = [await raw_tap(server.port, f"/{link.token}", bad) for _ in range(3)]
        assert statuses == [302] * 3
        publisher = server.app[PUBLISHER]
        assert (publisher.spooled, publisher.buffered, publisher.lost) == (2, 1, 0)
    spool = Spool(tmp_path / "spool", "redirect-0", 1 << 20)
    records, _ = spool.read(10)
    spool.close()
    assert [clickevent.decode(r[2]).user_agent for r in records] == ["Mozilla/5.0 \ufffd\ufffd"] * 3


async def test_clicks_an_error_takes_while_spilling_are_counted_as_lost(
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Kafka away, a spill that fails unexpectedly (a bug) still answers 302 and
    counts every click it took as lost: none goes missing uncounted."""
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_away_config(database_url, tmp_path)
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]

        def broken(records: object) -> None:
            raise RuntimeError("a bug in spooling")

        with monkeypatch.context() as patch:
            patch.setattr(publisher, "_spool_records", broken)
            statuses = [await raw_tap(server.port, f"/{link.token}", b"") for _ in range(5)]
            assert statuses == [302] * 5
            await wait_until(lambda: publisher.lost + publisher.buffered == 5, within=5)
        assert publisher.spooled == 0
        assert publisher.lost >= 4


def broker_config(
    database_url: str, bootstrap: str, topic: str, tmp_path: Path, **settings: str
) -> RedirectConfig:
    """A redirect worker publishing to `topic`, spooling under tmp_path."""
    return RedirectConfig.from_env(
        {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CLICK_TOPIC": topic,
            "SPOOL_DIR": str(tmp_path / "spool"),
            **settings,
        }
    )


async def first_tap(server: RunningServer, token: str) -> tuple[LinkGroup, bytes]:
    """Tap once, wait until it is published, and return the link's cache entry."""
    publisher = server.app[PUBLISHER]
    async with aiohttp.ClientSession() as session:
        assert await click(session, f"{server.url}/{token}", "first") == 302
    await wait_until(lambda: publisher.published == 1)
    cached = server.app[CACHE].find(token)
    assert cached is not None
    return cached


def burst(
    server: RunningServer, token: str, cached: tuple[LinkGroup, bytes], prefix: str, n: int
) -> None:
    """Queue `n` clicks in one go (one loop tick), user agents `prefix-0` ... `prefix-{n-1}`."""
    publisher = server.app[PUBLISHER]
    now = time.time()
    for i in range(n):
        publisher.submit(token, *cached, now, f"{prefix}-{i}", "203.0.113.9", None, "GET", False)


async def test_a_burst_goes_to_the_broker_in_one_round_trip(
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """Thousands of clicks flushed at once are sent as one record batch per partition, not a
    batch per encoded slice awaited in turn (which capped a worker below its request rate)."""
    topic = f"burst-{embedded.free_port()}"
    await ensure_topic(kafka_bootstrap, topic, 3)
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_config(database_url, kafka_bootstrap, topic, tmp_path, PUBLISH_LINGER_MS="50")
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        cached = await first_tap(server, link.token)
        producer = publisher._producer
        assert producer is not None
        calls = 0
        send_batch = producer.send_batch

        async def counted(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return await send_batch(*args, **kwargs)  # type: ignore[arg-type]

        producer.send_batch = counted  # type: ignore[method-assign]
        burst(server, link.token, cached, "burst", 3_000)  # one loop tick: one flush
        await wait_until(lambda: publisher.published == 3_001)
        # One key, one partition: ~1.2 MB of events make two full record batches (1 MiB each),
        # where a batch per slice of 256 was 12 sends, each awaited before the next.
        assert calls <= 3
        assert publisher.spooled == 0
    events = await consume(kafka_bootstrap, topic, 3_001)
    assert len({clickevent.decode(r.value).user_agent for r in events}) == 3_001


async def test_shutdown_with_a_stalled_broker_spools_every_unacknowledged_click(
    own_broker: embedded.Broker,
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    tmp_path: Path,
) -> None:
    """A broker that stops answering mid-flush (SIGSTOP) at shutdown: the clicks it never
    acknowledged are in the spool when the worker has stopped."""
    await ensure_topic(own_broker.bootstrap_servers, TOPIC, 3)
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_config(
        database_url,
        own_broker.bootstrap_servers,
        TOPIC,
        tmp_path,
        PUBLISH_LINGER_MS="5",
        KAFKA_REQUEST_TIMEOUT_MS="30000",
        SHUTDOWN_TIMEOUT_SECONDS="1",
    )
    assert own_broker.process is not None
    try:
        async with running(create_app(config), make_handler) as server:
            publisher = server.app[PUBLISHER]
            cached = await first_tap(server, link.token)
            own_broker.process.send_signal(signal.SIGSTOP)
            burst(server, link.token, cached, "stalled", 3_000)
            # The flusher took the burst and waits for the stopped broker: nothing is published.
            await wait_until(lambda: publisher.buffered == 0, within=10)
            assert publisher.published == 1
    finally:
        own_broker.process.send_signal(signal.SIGCONT)
    spool = Spool(tmp_path / "spool", "redirect-0", 1 << 30)
    records, _ = spool.read(10_000)
    spool.close()
    agents = {clickevent.decode(r[2]).user_agent for r in records}
    assert {f"stalled-{i}" for i in range(3_000)} <= agents


async def test_half_a_full_buffer_goes_to_the_spool_outside_the_handler(
    own_broker: embedded.Broker,
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    tmp_path: Path,
) -> None:
    """With the broker stalled, a buffer at half its limit is moved to the spool by a task,
    in slices (nothing encoded in the handler), and replayed once the broker is back."""
    await ensure_topic(own_broker.bootstrap_servers, TOPIC, 3)
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_config(
        database_url,
        own_broker.bootstrap_servers,
        TOPIC,
        tmp_path,
        PUBLISH_LINGER_MS="5",
        PUBLISH_BUFFER_EVENTS="4000",
        KAFKA_REQUEST_TIMEOUT_MS="30000",
    )
    assert own_broker.process is not None
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        cached = await first_tap(server, link.token)
        own_broker.process.send_signal(signal.SIGSTOP)
        try:
            # A first flush gets stuck on the stopped broker...
            publisher.submit(link.token, *cached, time.time(), "stuck", None, None, "GET", False)
            await wait_until(lambda: publisher.buffered == 0, what="the flusher took 'stuck'")
            burst(server, link.token, cached, "held", 2_500)
            assert (publisher.spooled, publisher.buffered) == (0, 2_500)  # the handler's share
            await wait_until(lambda: publisher.spooled == 2_500, within=5)
            assert publisher.spooling
        finally:
            own_broker.process.send_signal(signal.SIGCONT)
        await wait_until(lambda: publisher.published >= 2_502 and not publisher.spooling)


async def test_an_unexpected_error_handing_over_a_batch_loses_no_click(
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """A producer that fails in a way nobody planned for, in the middle of a flush: every
    click of the flush goes to the spool, the error is counted, and the replay publishes
    them all."""
    topic = f"unexpected-{embedded.free_port()}"
    await ensure_topic(kafka_bootstrap, topic, 3)
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_config(database_url, kafka_bootstrap, topic, tmp_path, PUBLISH_LINGER_MS="50")
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        cached = await first_tap(server, link.token)
        producer = publisher._producer
        assert producer is not None
        send_batch = producer.send_batch
        calls = 0

        async def fails_once(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in the producer")
            return await send_batch(*args, **kwargs)  # type: ignore[arg-type]

        producer.send_batch = fails_once  # type: ignore[method-assign]
        # One key: ~1.2 MB of events fill a whole record batch mid-flush, whose hand-over fails.
        burst(server, link.token, cached, "unplanned", 3_000)
        await wait_until(lambda: publisher.published == 3_001 and not publisher.spooling)
        assert server.app[SUPERVISOR].restarts["click-flusher"] == 1
        assert publisher.spooled == 3_000
        assert publisher.lost == 0
    events = await consume(kafka_bootstrap, topic, 3_001)
    agents = {clickevent.decode(r.value).user_agent for r in events}
    assert {f"unplanned-{i}" for i in range(3_000)} <= agents


async def test_a_hand_over_that_never_returns_is_spooled_at_shutdown(
    database_url: str,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    """A producer that never takes a full record batch (its queue never drains): when
    shutdown gives up waiting, the clicks of that batch are in the spool too."""
    topic = f"never-{embedded.free_port()}"
    await ensure_topic(kafka_bootstrap, topic, 3)
    [link] = await create_links(db, account_id, [NewLink("https://example.com/")])
    config = broker_config(
        database_url,
        kafka_bootstrap,
        topic,
        tmp_path,
        PUBLISH_LINGER_MS="5",
        SHUTDOWN_TIMEOUT_SECONDS="1",
    )
    async with running(create_app(config), make_handler) as server:
        publisher = server.app[PUBLISHER]
        cached = await first_tap(server, link.token)
        producer = publisher._producer
        assert producer is not None
        waiting = asyncio.Event()

        async def never_drains(*args: object, **kwargs: object) -> object:
            waiting.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        producer.send_batch = never_drains  # type: ignore[method-assign]
        burst(server, link.token, cached, "held", 3_000)
        await asyncio.wait_for(waiting.wait(), 30)
        assert publisher.published == 1
    spool = Spool(tmp_path / "spool", "redirect-0", 1 << 30)
    records, _ = spool.read(10_000)
    spool.close()
    agents = {clickevent.decode(r[2]).user_agent for r in records}
    assert {f"held-{i}" for i in range(3_000)} <= agents


async def test_a_send_spooled_while_in_flight_fails_later_without_an_unread_exception() -> None:
    """A batch spooled while in flight may fail afterwards; its exception is read, not logged."""
    loop = asyncio.get_running_loop()
    unread: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unread.append(context))
    try:
        outgoing = _Outgoing(None, TOPIC, 3, 1.0, None)  # type: ignore[arg-type]
        future = loop.create_future()
        record = (b"token", 0, b"{}")
        outgoing._in_flight.append((future, [record]))
        assert outgoing.unconfirmed() == [record]
        future.set_exception(RuntimeError("node not ready"))
        await asyncio.sleep(0)  # the done callbacks run
        del future, outgoing
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert unread == []
