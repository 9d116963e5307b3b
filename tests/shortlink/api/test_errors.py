"""Every failure is a JSON error: unknown routes, methods, oversized bodies, a lost database."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from shortlink.api.app import METRICS, create_app
from shortlink.api.config import ApiConfig
from shortlink.metrics import render
from shortlink.pool import POOL
from tests.infra import metric_samples, running
from tests.shortlink.api.conftest import Client, Tenant, raw_request


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    """404 and 405 come as JSON errors; 405 says which methods are allowed."""
    auth = {"Authorization": f"Bearer {client.key}"}
    missing = await client.session.get(f"{client.server.url}/v1/nothing", headers=auth)
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    wrong = await client.session.put(f"{client.server.url}/v1/links", headers=auth)
    assert wrong.status == 405
    assert "POST" in wrong.headers["Allow"]
    assert (await wrong.json())["error"]["code"] == "method_not_allowed"


async def test_oversized_body_is_413(api_env: dict[str, str], tenant: Tenant) -> None:
    """A body over MAX_REQUEST_BYTES is refused with 413 before it is parsed."""
    config = ApiConfig.from_env({**api_env, "MAX_REQUEST_BYTES": "2048"})
    async with running(create_app(config)) as server, aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/v1/links",
            data=b'{"url": "' + b"a" * 4096 + b'"}',
            headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
        ) as answer:
            assert answer.status == 413
            assert (await answer.json())["error"]["code"] == "request_too_large"


async def test_lost_database_is_503_not_500(api_env: dict[str, str], tenant: Tenant) -> None:
    """When the database goes away, requests get 503 with a JSON error and no traceback."""
    async with running(create_app(ApiConfig.from_env(api_env))) as server:
        server.app[POOL].terminate()
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{server.url}/v1/links/AbC1234", headers={"Authorization": f"Bearer {tenant.key}"}
            ) as answer,
        ):
            body = await answer.json()
        assert answer.status == 503
        assert body["error"]["code"] == "unavailable"
        assert "Traceback" not in str(body)


async def test_a_primary_turned_standby_is_503_and_the_pool_connects_afresh(
    api_env: dict[str, str], database_url: str, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A write on connections to a server that takes no writes (a standby since a failover)
    is a 503; the pool then connects afresh, so once the server takes writes again (a new
    primary) the next write succeeds."""
    role = f"writer_{secrets.token_hex(5)}"
    owner = await db.fetchval("SELECT current_user")
    await db.execute(f'CREATE ROLE {role} LOGIN IN ROLE "{owner}"')
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
    headers = {"Authorization": f"Bearer {tenant.key}"}
    body = {"url": "https://shop.example/"}
    try:
        async with (
            running(create_app(ApiConfig.from_env({**api_env, "DATABASE_URL": url}))) as server,
            aiohttp.ClientSession() as session,
        ):
            await db.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
            await server.app[POOL].expire_connections()
            async with session.post(f"{server.url}/v1/links", json=body, headers=headers) as r:
                assert r.status == 503
                assert (await r.json())["error"]["code"] == "unavailable"
            await db.execute(f"ALTER ROLE {role} RESET default_transaction_read_only")
            async with session.post(f"{server.url}/v1/links", json=body, headers=headers) as r:
                assert r.status == 201
    finally:
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")


async def test_metrics_count_answers_by_route_and_status(client: Client) -> None:
    """Each answer is counted under its route pattern (not the raw path) and status."""
    made = (await client.post("/v1/links", {"url": "https://example.com/"})).json["links"][0]
    await client.get(f"/v1/links/{made['token']}")
    await client.get("/v1/links/NoSuch99")
    found = metric_samples(render(client.server.app[METRICS]).decode())
    answers = "shortlink_api_responses_total"
    assert found[answers, (("method", "POST"), ("route", "/v1/links"), ("status", "201"))] == 1
    by_token = (("method", "GET"), ("route", "/v1/links/{token}"))
    assert found[answers, (*by_token, ("status", "200"))] == 1
    assert found[answers, (*by_token, ("status", "404"))] == 1
    assert found["shortlink_api_request_seconds_count", (("route", "/v1/links/{token}"),)] == 2


async def test_a_streamed_answer_that_fails_midway_is_cut_off_not_completed(
    api_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A defect mid-stream drops the connection, not completing the stream; logged, counted."""

    async def defect(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        await response.prepare(request)
        await response.write(b"a,b\r\n" * 100)
        raise RuntimeError("a defect part-way")

    app = create_app(ApiConfig.from_env(api_env))
    app.router.add_get("/defect.csv", defect)
    async with running(app) as server, aiohttp.ClientSession() as session:
        with caplog.at_level(logging.INFO):
            async with session.get(f"{server.url}/defect.csv") as answer:
                assert answer.status == 200  # sent before the defect
                with pytest.raises(aiohttp.ClientPayloadError):
                    await answer.read()
            raw = await raw_request(server, "GET", b"/defect.csv", [])
        samples = metric_samples(render(server.app[METRICS]).decode())
    assert b"HTTP/1.1" not in raw.body
    assert b"internal" not in raw.body
    assert not raw.body.endswith(b"0\r\n\r\n")  # no closing chunk: the client knows
    logged = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in logged] == ["unhandled error", "unhandled error"]
    labels = (("method", "GET"), ("route", "/defect.csv"), ("status", "500"))
    assert samples["shortlink_api_responses_total", labels] == 2


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_body_that_is_not_its_content_encoding_is_400(
    client: Client, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    """A body that does not decompress as its Content-Encoding says is a JSON 400, not a 500."""
    headers = [
        f"Authorization: Bearer {client.key}".encode(),
        b"Content-Type: application/json",
        f"Content-Encoding: {encoding}".encode(),
    ]
    with caplog.at_level(logging.INFO):
        answer = await raw_request(client.server, "POST", b"/v1/links", headers, b"not " + b"x" * 9)
    assert answer.status == 400
    assert orjson.loads(answer.body)["error"]["code"] == "bad_request"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_an_unexpected_error_is_a_logged_counted_json_500(
    api_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's defect is logged with its traceback, counted, and answered as a bare JSON 500."""

    async def defect(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail of a defect")

    app = create_app(ApiConfig.from_env(api_env))
    app.router.add_get("/defect", defect)
    async with running(app) as server, aiohttp.ClientSession() as session:
        with caplog.at_level(logging.INFO):
            async with session.get(f"{server.url}/defect") as answer:
                body = await answer.read()
                status, content_type = answer.status, answer.content_type
        samples = metric_samples(render(server.app[METRICS]).decode())
    assert (status, content_type) == (500, "application/json")
    assert orjson.loads(body) == {"error": {"code": "internal", "message": "internal error"}}
    [logged] = [r for r in caplog.records if r.exc_info]
    assert logged.getMessage() == "unhandled error"
    assert logged.exc_info is not None
    assert logged.exc_info[0] is RuntimeError
    labels = (("method", "GET"), ("route", "/defect"), ("status", "500"))
    assert samples["shortlink_api_responses_total", labels] == 1


def _deep(levels: int, opener: bytes, closer: bytes) -> bytes:
    return opener * levels + b"1" + closer * levels


HOSTILE_VALUES = [
    _deep(300, b'{"a":', b"}"),  # orjson reads 1,024 levels, writes 254
    _deep(300, b"[", b"]"),
    _deep(2000, b"[", b"]"),  # past what orjson reads
    b"1" + b"0" * 400,  # past a double
    b"18446744073709551616",  # past 64 bits
    b"-1e999",
    b'"a\\u0000b"',
    b'"\\ud800"',  # a lone surrogate
    b'"' + b"\xff\xfe" + b'"',  # not UTF-8
    b'"' + b"x" * 100_000 + b'"',
    b"{}",
    b"[[[]]]",
]
JSON_ROUTES = {
    ("POST", "/v1/links"): ["url", "recipients", "client_identifier", "callback_url", "https"],
    ("PATCH", "/v1/links/{token}"): ["url", "expires_in_days", "unsafe"],
    ("POST", "/v1/messages"): ["to", "body", "vars", "mode", "callback_url"],
    ("POST", "/v1/conversions"): ["token", "event", "value", "occurred_at", "metadata"],
    ("PUT", "/v1/endpoint"): ["url", "format", "secret", "enabled"],
}


@pytest.mark.parametrize(("method", "route"), list(JSON_ROUTES))
async def test_hostile_json_in_every_field_is_a_json_4xx(
    client: Client, caplog: pytest.LogCaptureFixture, method: str, route: str
) -> None:
    """Hostile JSON in every field of every JSON body is a JSON 4xx, and nothing is logged."""
    made = (await client.post("/v1/links", {"url": "https://e.example/"})).json["links"][0]
    path = route.replace("{token}", made["token"]).encode()
    headers = [f"Authorization: Bearer {client.key}".encode(), b"Content-Type: application/json"]
    with caplog.at_level(logging.INFO):
        for field in JSON_ROUTES[method, route]:
            for value in HOSTILE_VALUES:
                body = b'{"' + field.encode() + b'":' + value + b"}"
                answer = await raw_request(client.server, method, path, headers, body)
                assert 400 <= answer.status < 500, (field, value[:40], answer.body[:200])
                assert "code" in orjson.loads(answer.body)["error"]
            for whole in (_deep(1000, b"[", b"]"), _deep(1000, b'{"a":', b"}")):
                answer = await raw_request(client.server, method, path, headers, whole)
                assert 400 <= answer.status < 500, (whole[:40], answer.body[:200])
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("TRACE", b"/v1/links", []),
        ("OPTIONS", b"/v1/links", []),
        ("PROPFIND", b"/v1/links", []),
        ("FOO", b"/v1/links", []),
        ("OPTIONS", b"*", []),
        ("GET", b"http://elsewhere.example/v1/links", []),
        ("GET", b"//v1//links", []),
        ("GET", b"/v1/links/%2e%2e%2f%2e%2e%2f", []),
        ("GET", b"/v1/links/%ff%fe%00", []),
        ("GET", b"/v1/campaigns/%ff/stats", []),
        ("GET", b"/v1/campaigns/" + b"%C3%A9" * 1000 + b"/stats", []),
        ("GET", b"/v1/" + b"a/" * 3000, []),
        ("GET", b"/v1/links?client_ref=%ff&client_ref=%00", []),
        ("GET", b"/v1/campaigns?limit=%EF%BC%91&cursor=%ff", []),
        ("GET", b"/v1/deliveries?limit=99999999999999999999999&status=%00", []),
        ("GET", b"/v1/links", [b"Authorization: Bearer \xff\xfe"]),
        ("GET", b"/v1/links", [b"Authorization: \xff"]),
        ("GET", b"/v1/links", [b"Authorization: Bearer " + b"x" * 7000]),
        ("GET", b"/v1/links", [b"Authorization: Basic Zm9vOmJhcg=="]),
        ("GET", b"/v1/links", [b"Authorization: Bearer a", b"Authorization: Bearer b"]),
        ("POST", b"/v1/links", [b"Content-Type: application/json; charset=bogus"]),
        ("POST", b"/v1/links", [b"Content-Type: \xff"]),
        ("POST", b"/v1/links", [b"Content-Type: multipart/form-data"]),
        ("POST", b"/v1/links", [b"Idempotency-Key: \xff", b"Content-Type: application/json"]),
        ("POST", b"/v1/links", [b"Idempotency-Key: " + b"k" * 300]),
        ("GET", b"/static/" + b"a" * 5000, []),
        ("GET", b"/dashboard/" + b"%ff" * 100, []),
    ],
)
async def test_odd_requests_are_never_a_5xx(
    client: Client, method: str, path: bytes, headers: list[bytes]
) -> None:
    """Odd methods, paths, queries and headers are never a 5xx; our refusals are JSON."""
    if not any(h.startswith(b"Authorization") for h in headers):
        headers = [f"Authorization: Bearer {client.key}".encode(), *headers]
    answer = await raw_request(client.server, method, path, headers, b'{"url": 1}')
    assert answer.status < 500, answer.body[:200]
    if answer.status < 400:
        return
    if answer.headers.get("Content-Type", "").startswith("application/json"):
        assert "code" in orjson.loads(answer.body)["error"]
    else:  # refused by the HTTP parser before any middleware
        assert answer.status == 400
