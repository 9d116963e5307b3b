"""Every failure is a JSON error: unknown routes, methods, oversized bodies, a lost database."""

from __future__ import annotations

import aiohttp

from shortlink.api.app import METRICS, create_app
from shortlink.api.config import ApiConfig
from shortlink.metrics import render
from shortlink.pool import POOL
from tests.infra import metric_samples, running
from tests.shortlink.api.conftest import Client, Tenant


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
