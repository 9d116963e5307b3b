"""The contract-checking sink's fault modes, switched at run time as `make chaos` does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from loadtests import sink

DETAIL = {
    "TrackedUrl": "https://shop.example.com/offer",
    "ClientIdentifier": "bench",
    "ClientRef": "msg-1",
    "TrackingUrlId": 1,
    "UserId": 1,
    "PhoneNumber": "447700900123",
    "UserAgent": "Mozilla/5.0 (iPhone)",
    "Referrer": "203.0.113.9",
    "DeviceName": "iPhone",
    "DeviceManufacturer": "Apple",
    "IsWarningPageServed": False,
    "ShortenDate": "/Date(1796000000000)/",
    "ClickDate": "/Date(1796000001000)/",
}


@pytest.fixture
async def endpoint(aiohttp_server: Callable[..., Any]) -> TestServer:
    """The sink on a free port of 127.0.0.1."""
    server: TestServer = await aiohttp_server(sink.build())
    return server


async def post(session: aiohttp.ClientSession, server: TestServer, request_id: str) -> int:
    body = {"RequestIdentifier": request_id, "ClickDetails": [DETAIL]}
    async with session.post(
        server.make_url("/hook"), json=body, headers={"X-Request-Identifier": request_id}
    ) as response:
        return response.status


async def stats(session: aiohttp.ClientSession, server: TestServer) -> dict[str, Any]:
    async with session.get(server.make_url("/stats")) as response:
        found: dict[str, Any] = await response.json()
        return found


async def set_mode(session: aiohttp.ClientSession, server: TestServer, body: object) -> int:
    async with session.post(server.make_url("/mode"), json=body) as response:
        return response.status


async def test_failing_and_resetting_endpoints_take_nothing(endpoint: TestServer) -> None:
    """In "fail" mode a POST gets 500 and in "reset" mode the connection is reset; neither
    counts the click, both count the refusal; back in "ok" the same POST is taken."""
    request_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        assert await set_mode(session, endpoint, {"mode": "fail"}) == 200
        assert await post(session, endpoint, request_id) == 500
        assert await set_mode(session, endpoint, {"mode": "reset"}) == 200
        with pytest.raises(aiohttp.ClientError):
            await post(session, endpoint, request_id)
        assert await set_mode(session, endpoint, {"mode": "ok"}) == 200
        assert await post(session, endpoint, request_id) == 200
        found = await stats(session, endpoint)
    assert found["refused"] == {"fail": 1, "reset": 1}
    assert (found["posts"], found["distinct_clicks"], found["invalid"]) == (1, 1, 0)


async def test_slow_endpoint_takes_the_post_after_holding_it(endpoint: TestServer) -> None:
    """In "slow" mode the POST is answered 200 only after the hold, and counted; a retry
    with the same RequestIdentifier is a duplicate, not a second click."""
    request_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        assert await set_mode(session, endpoint, {"mode": "slow", "seconds": 0.3}) == 200
        assert await post(session, endpoint, request_id) == 200
        assert await post(session, endpoint, request_id) == 200
        found = await stats(session, endpoint)
        async with session.get(endpoint.make_url("/arrivals")) as response:
            arrivals = await response.json()
    assert (found["clicks"], found["distinct_clicks"]) == (2, 1)
    assert [ms for ms, _ in arrivals] == [1796000001000]


@pytest.mark.parametrize(
    "body", [{"mode": "explode"}, ["fail"], "not an object", {"mode": "slow", "seconds": "x"}]
)
async def test_unknown_mode_is_a_422(endpoint: TestServer, body: object) -> None:
    """A mode the sink does not know is refused with a JSON error, and the mode stays."""
    async with aiohttp.ClientSession() as session:
        assert await set_mode(session, endpoint, body) == 422
        found = await stats(session, endpoint)
    assert found["mode"] == "ok"
