"""/v1/endpoint and /v1/deliveries."""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg

from forwarder import formats
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from shortlink.api.keys import RESOLVER
from tests.infra import SilentResolver, running
from tests.shortlink.api.conftest import Client, Tenant


async def test_endpoint_is_stored_validated_and_never_shows_its_secret(client: Client) -> None:
    """PUT stores the endpoint, GET shows it without the secret, bad fields are 422."""
    assert (await client.get("/v1/endpoint")).status == 404
    stored = await client.call(
        "PUT",
        "/v1/endpoint",
        {
            "url": "http://127.0.0.1:9/hook",
            "format": "xml",
            "mode": "first",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
    )
    assert stored.status == 200
    shown = (await client.get("/v1/endpoint")).json
    assert shown["format"] == "xml"
    assert shown["secret_set"] is True
    assert "whsec" not in str(shown)
    for body, field in (
        ({"url": "ftp://x/"}, "url"),
        ({"url": "https://example.com/", "format": "yaml"}, "format"),
        ({"url": "https://example.com/", "mode": "sometimes"}, "mode"),
        ({"url": "https://example.com/", "secret": "letmein"}, "secret"),
        ({"format": "json"}, "url"),
        ({"url": "http://127.0.0.1:9/\u0000"}, "url"),
        ({"url": "https://example.com:0/"}, "url"),
        ({"url": "https://example.com/", "secret": "whsec_\u0000"}, "secret"),
        ({"url": "https://example.com/", "secret": "whsec_" + "A" * 31 + "="}, "secret"),
        ({"url": "https://example.com/", "format": None, "colour": "red"}, "colour"),
    ):
        answer = await client.call("PUT", "/v1/endpoint", body)
        assert answer.status == 422, body
        assert answer.json["error"]["details"][0]["field"] == field


async def test_deliveries_are_listed_and_dead_ones_retried(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Dead deliveries are listed by status; retry queues one again, keeping its identifier."""
    await client.call("PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/hook"})
    endpoint_id = await db.fetchval(
        "SELECT id FROM endpoints WHERE account_id = $1", tenant.account_id
    )
    dead, done = str(uuid.uuid4()), str(uuid.uuid4())
    for rid, status in ((dead, "dead"), (done, "delivered")):
        await db.execute(
            """
            INSERT INTO deliveries (request_identifier, endpoint_id, format, body, clicks,
                                    oldest_click_at, status, attempts, last_error)
            VALUES ($1, $2, 'json', $3, 1, now(), $4, 10, 'HTTP 500')
            """,
            rid,
            endpoint_id,
            formats.render_json(rid, []),
            status,
        )
    listed = (await client.get("/v1/deliveries?status=dead")).json["deliveries"]
    assert [d["request_identifier"] for d in listed] == [dead]
    assert listed[0]["last_error"] == "HTTP 500"
    assert len((await client.get("/v1/deliveries")).json["deliveries"]) == 2
    retried = await client.post(f"/v1/deliveries/{dead}/retry")
    assert retried.status == 202
    row = await db.fetchrow(
        "SELECT status, attempts FROM deliveries WHERE request_identifier = $1", dead
    )
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert (await client.post(f"/v1/deliveries/{done}/retry")).status == 409
    assert (await client.post(f"/v1/deliveries/{uuid.uuid4()}/retry")).status == 404
    assert (await client.post("/v1/deliveries/not-a-uuid/retry")).status == 404
    assert (await client.get("/v1/deliveries?status=lost")).status == 422


async def test_an_endpoint_can_ask_for_conversions(client: Client) -> None:
    """conversions is false unless asked for, stored and shown; a PUT without it turns it off."""
    await client.call("PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/hook"})
    assert (await client.get("/v1/endpoint")).json["conversions"] is False
    stored = await client.call(
        "PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/hook", "conversions": True}
    )
    assert stored.json["conversions"] is True
    assert (await client.get("/v1/endpoint")).json["conversions"] is True
    await client.call("PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/hook"})
    assert (await client.get("/v1/endpoint")).json["conversions"] is False
    bad = await client.call(
        "PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/hook", "conversions": "yes"}
    )
    assert bad.status == 422
    assert bad.json["error"]["details"][0]["field"] == "conversions"


async def test_a_host_that_does_not_resolve_in_time_is_a_422(
    api_env: dict[str, str], tenant: Tenant, db: asyncpg.Connection
) -> None:
    """A DNS lookup that never answers is a 422 at ENDPOINT_DNS_TIMEOUT_SECONDS; nothing stored."""
    app = create_app(ApiConfig.from_env({**api_env, "ENDPOINT_DNS_TIMEOUT_SECONDS": "0.2"}))
    silent = SilentResolver()
    app[RESOLVER] = silent
    async with running(app) as server, aiohttp.ClientSession() as session:
        client = Client(server, session, tenant.key)
        for method, path, body, field in (
            ("PUT", "/v1/endpoint", {"url": "https://hooks.example/in"}, "url"),
            (
                "POST",
                "/v1/links",
                {"url": "https://e.example/", "callback_url": "https://cb.example/"},
                "callback_url",
            ),
        ):
            answer = await client.call(method, path, body)
            assert answer.status == 422, answer.body
            [detail] = answer.json["error"]["details"]
            assert detail["field"] == field
            assert "did not resolve within 0.2 s" in detail["message"]
        assert (await client.get("/v1/endpoint")).status == 404
    assert silent.asked == ["hooks.example", "cb.example"]
    count = "SELECT count(*) FROM links WHERE account_id = $1"
    assert await db.fetchval(count, tenant.account_id) == 0


async def test_an_endpoint_host_of_digits_and_dots_must_be_an_ipv4_address(client: Client) -> None:
    """An endpoint host of digits and dots that is no IPv4 address (HTTP://0) is a 422."""
    for url in ("HTTP://0", "http://127.1/hook", "http://1.2.3.4./hook"):
        answer = await client.call("PUT", "/v1/endpoint", {"url": url})
        assert answer.status == 422, url
        [detail] = answer.json["error"]["details"]
        assert detail["field"] == "url"
        assert "not an IPv4 address" in detail["message"]
    assert (await client.call("PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/"})).status == 200
