"""The redirect server against real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import orjson
import pytest

from shortlink import clickevent, links
from shortlink.links import NewLink, create_links
from shortlink.metrics import render
from shortlink.redirect.app import METRICS, create_app, make_handler
from shortlink.redirect.cache import CACHE
from shortlink.redirect.config import RedirectConfig
from tests.infra import (
    RunningServer,
    all_published,
    consume,
    metric_samples,
    running,
    wait_until,
)

TARGET = "https://example.com/landing?utm_source=sms&x=%20y"


async def make_link(db: asyncpg.Connection, account_id: int, **fields: object) -> str:
    spec = {"target_url": TARGET, "phone_number": "447700900123", **fields}
    [link] = await create_links(db, account_id, [NewLink(**spec)])  # type: ignore[arg-type]
    return link.token


async def get_text(server: RunningServer, path: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + path, allow_redirects=False) as response:
            return await response.text()


async def get(server: RunningServer, path: str, **kwargs: object) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session:
        response = await session.get(server.url + path, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
        await response.read()
        return response


async def test_redirect_answers_302_with_the_stored_location(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A known token answers 302 with exactly the stored URL and an uncacheable Cache-Control."""
    token = await make_link(db, account_id)
    response = await get(redirect_server, f"/{token}")
    assert response.status == 302
    assert response.headers["Location"] == TARGET
    assert response.headers["Cache-Control"] == "private, max-age=0"


async def test_head_answers_the_same_headers_and_is_recorded_as_head(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """HEAD gets the same redirect headers and publishes a click whose method is HEAD."""
    token = await make_link(db, account_id)
    async with aiohttp.ClientSession() as session:
        response = await session.head(f"{redirect_server.url}/{token}", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == TARGET
    assert response.headers["Cache-Control"] == "private, max-age=0"
    await all_published(redirect_server)
    [record] = await consume(kafka_bootstrap, click_topic, 1, to_end=True)
    assert clickevent.decode(record.value).method == "HEAD"


async def test_click_event_carries_every_field(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """The event read back from Kafka has every field of the click and of the link."""
    token = await make_link(db, account_id, client_ref="msg-42", client_identifier="spring-sale")
    row = await db.fetchrow("SELECT id, created_at FROM links WHERE token = $1", token)
    before = datetime.now(UTC)
    response = await get(
        redirect_server,
        f"/{token}",
        headers={"User-Agent": "Mozilla/5.0 (iPhone) Safari", "Referer": "https://sms.example/"},
    )
    after = datetime.now(UTC)
    assert response.status == 302
    await all_published(redirect_server)
    [record] = await consume(kafka_bootstrap, click_topic, 1, to_end=True)
    assert record.key == token.encode()
    event = clickevent.decode(record.value)
    assert event.token == token
    assert event.link_id == row["id"]
    assert event.account_id == account_id
    assert event.target_url == TARGET
    assert event.phone_number == "447700900123"
    assert event.client_ref == "msg-42"
    assert event.client_identifier == "spring-sale"
    assert event.shortened_at_ms == int(row["created_at"].timestamp() * 1000)
    assert int(before.timestamp() * 1000) - 1 <= event.clicked_at_ms
    assert event.clicked_at_ms <= int(after.timestamp() * 1000) + 1
    assert record.timestamp == event.clicked_at_ms
    assert event.user_agent == "Mozilla/5.0 (iPhone) Safari"
    assert event.client_ip == "127.0.0.1"
    assert event.referer == "https://sms.example/"
    assert event.method == "GET"
    assert event.warning_page_served is False
    raw = orjson.loads(record.value)
    assert raw[0] == 1
    assert raw[1][14] == "7"  # UUIDv7


async def test_each_click_is_one_event_with_its_own_id(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Twenty clicks on one link give exactly twenty events with distinct ids."""
    token = await make_link(db, account_id)
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(f"{redirect_server.url}/{token}", allow_redirects=False) as r:
                assert r.status == 302
    await all_published(redirect_server)
    records = await consume(kafka_bootstrap, click_topic, 20, to_end=True)
    assert len(records) == 20
    assert len({clickevent.decode(r.value).event_id for r in records}) == 20


async def test_unknown_token_is_a_404_page_and_is_cached_negatively(
    redirect_server: RunningServer,
) -> None:
    """An unknown token is a 404 HTML page; asking again within the TTL skips the database."""
    cache = redirect_server.app[CACHE]
    response = await get(redirect_server, "/NoSuch1")
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert cache.loads == 1
    response = await get(redirect_server, "/NoSuch1")
    assert response.status == 404
    assert cache.loads == 1
    assert cache.negative_hits == 1


@pytest.mark.parametrize(
    "path",
    ["/abc", "/abcdefghi", "/abc-123", "/abc_1234", "/ab%20cdef", "/Ünïcode1", "/a/b/c/d/e", "/"],
)
async def test_malformed_token_is_a_404_without_cache_or_database(
    redirect_server: RunningServer, path: str
) -> None:
    """A path that is not 6-8 base62 characters is a 404 that never reaches cache or database."""
    cache = redirect_server.app[CACHE]
    response = await get(redirect_server, path)
    assert response.status == 404
    assert (cache.hits, cache.misses, cache.loads) == (0, 0, 0)


async def test_expired_link_is_410(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A link past its expiry answers 410 with a page saying it has expired."""
    token = await make_link(db, account_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    response = await get(redirect_server, f"/{token}")
    assert response.status == 410
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{redirect_server.url}/{token}") as again:
            assert "expired" in (await again.text()).lower()


async def test_disabled_link_is_410(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """A link disabled after it was cached answers 410 as soon as the change reaches the worker."""
    token = await make_link(db, account_id)
    assert (await get(redirect_server, f"/{token}")).status == 302
    assert await links.disable(db, account_id, token)

    async def gone() -> bool:
        return (await get(redirect_server, f"/{token}")).status == 410

    # The promise: every worker within 1 s.
    await wait_until(gone, within=1.0, step=0.02, what="410 within 1 s of the disable")
    assert "no longer available" in (await get_text(redirect_server, f"/{token}")).lower()


async def test_unsafe_link_shows_warning_then_continues_with_flag(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """An unsafe link shows a warning naming the host; continuing redirects and flags the click."""
    token = await make_link(db, account_id, unsafe=True)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{redirect_server.url}/{token}", allow_redirects=False) as page:
            assert page.status == 200
            html = await page.text()
            assert page.headers["Cache-Control"] == "no-store"
    assert "example.com" in html
    assert f'href="/{token}?continue=1"' in html
    response = await get(redirect_server, f"/{token}?continue=1")
    assert response.status == 302
    assert response.headers["Location"] == TARGET
    await all_published(redirect_server)
    records = await consume(kafka_bootstrap, click_topic, 1, to_end=True)
    assert len(records) == 1  # the warning page itself is not a click
    assert clickevent.decode(records[0].value).warning_page_served is True


async def test_warning_page_escapes_the_target(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Markup in the target URL is escaped on the warning page."""
    token = await make_link(
        db, account_id, unsafe=True, target_url='https://evil.example/"><script>alert(1)</script>'
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{redirect_server.url}/{token}") as page:
            html = await page.text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html


async def test_concurrent_misses_make_one_query(
    cold_redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Fifty simultaneous first requests for one token load it from the database once."""
    token = await make_link(db, account_id)
    cache = cold_redirect_server.app[CACHE]
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.get(
                f"{cold_redirect_server.url}/{token}", allow_redirects=False
            ) as r:
                return r.status

        statuses = await asyncio.gather(*(one() for _ in range(50)))
    assert statuses == [302] * 50
    assert cache.loads == 1
    assert cache.coalesced + cache.hits == 49


async def test_cache_hit_skips_the_database(
    cold_redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """After the first request, the link is served from the cache."""
    token = await make_link(db, account_id)
    cache = cold_redirect_server.app[CACHE]
    for _ in range(3):
        assert (await get(cold_redirect_server, f"/{token}")).status == 302
    assert (cache.loads, cache.hits) == (1, 2)


async def test_other_methods_are_405(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """POST on a link is 405 with an Allow header, and publishes nothing."""
    token = await make_link(db, account_id)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{redirect_server.url}/{token}", allow_redirects=False) as r:
            assert r.status == 405
            assert r.headers["Allow"] == "GET, HEAD"


async def test_health_readiness_robots_and_favicon(redirect_server: RunningServer) -> None:
    """healthz and readyz answer 200 JSON, robots.txt disallows all, favicon is a cheap 404."""
    health = await get(redirect_server, "/healthz")
    assert health.status == 200
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{redirect_server.url}/readyz") as ready:
            assert ready.status == 200
            assert await ready.json() == {
                "database": "ok",
                "broker": "ok",
                "spooling": False,
                "listening": True,
            }
        async with session.get(f"{redirect_server.url}/robots.txt") as robots:
            assert await robots.text() == "User-agent: *\nDisallow: /\n"
    favicon = await get(redirect_server, "/favicon.ico")
    assert favicon.status == 404
    assert favicon.content_length == 0


async def test_redirect_status_is_configurable(
    redirect_env: dict[str, str], db: asyncpg.Connection, account_id: int
) -> None:
    """REDIRECT_STATUS=307 makes redirects answer 307."""
    token = await make_link(db, account_id)
    config = RedirectConfig.from_env({**redirect_env, "REDIRECT_STATUS": "307"})
    async with running(create_app(config), make_handler) as server:
        response = await get(server, f"/{token}")
    assert response.status == 307
    assert response.headers["Location"] == TARGET


async def test_forwarded_for_is_used_only_from_trusted_proxies(
    redirect_env: dict[str, str],
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """X-Forwarded-For gives the client IP when the peer is trusted, and is ignored otherwise."""
    token = await make_link(db, account_id)
    forged = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    async with running(create_app(RedirectConfig.from_env(redirect_env)), make_handler) as plain:
        await get(plain, f"/{token}", headers=forged)
    trusted_env = {**redirect_env, "TRUSTED_PROXIES": "127.0.0.0/8"}
    async with running(create_app(RedirectConfig.from_env(trusted_env)), make_handler) as proxied:
        await get(proxied, f"/{token}", headers=forged)
    records = await consume(kafka_bootstrap, click_topic, 2, to_end=True)
    ips = sorted(clickevent.decode(r.value).client_ip or "" for r in records)
    assert ips == ["127.0.0.1", "203.0.113.9"]


async def test_metrics_count_answers_cache_and_lookups(
    cold_redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Redirects by status, cache hits and misses and the lookup histogram add up."""
    token = await make_link(db, account_id)
    expired = await make_link(db, account_id, expires_at=datetime.now(UTC) - timedelta(days=1))
    for path in (f"/{token}", f"/{token}", f"/{token}", f"/{expired}", "/NoSuch12", "/a!"):
        await get(cold_redirect_server, path)
    found = metric_samples(render(cold_redirect_server.app[METRICS]).decode())
    status = "shortlink_redirect_responses_total"
    assert found[status, (("status", "302"),)] == 3
    assert found[status, (("status", "410"),)] == 1
    assert found[status, (("status", "404"),)] == 2  # unknown token, and not a token
    assert found["shortlink_link_cache_hits_total", ()] == 2
    assert found["shortlink_link_cache_misses_total", ()] == 3  # token, expired, unknown
    assert found["shortlink_link_lookup_seconds_count", ()] == 3
    assert found["shortlink_link_lookup_seconds_bucket", (("le", "+Inf"),)] == 3
    assert found["shortlink_events_dropped_total", ()] == 0


async def test_a_request_that_is_not_http_is_a_400_and_one_debug_line(
    redirect_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An unparseable request gets aiohttp's 400, is counted, and logs no error or traceback."""
    caplog.set_level(logging.DEBUG)
    name = ("shortlink_redirect_malformed_requests_total", ())
    before = metric_samples(render(redirect_server.app[METRICS]).decode())[name]
    reader, writer = await asyncio.open_connection("127.0.0.1", redirect_server.port)
    writer.write(b"GET /Abc1234 HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"a" * 20_000 + b"\r\n\r\n")
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.split()[1] == b"400"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    found = metric_samples(render(redirect_server.app[METRICS]).decode())
    assert found[name] == before + 1  # the count is per process: other tests add to it
