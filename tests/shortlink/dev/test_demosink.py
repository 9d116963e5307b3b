"""The demo customer endpoint `make run` starts: it accepts whatever the forwarder sends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from forwarder import formats
from shortlink.dev import demosink
from tests.forwarder.test_formats import SEED_DETAIL

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    """The demo endpoint's route on a test server."""
    app = web.Application()
    app.router.add_post("/hook", demosink.hook)
    return await aiohttp_client(app)


async def post(client: Client, body: bytes, content_type: str) -> int:
    async with client.post(
        "/hook",
        data=body,
        headers={"Content-Type": content_type, "X-Request-Identifier": "rid-1"},
    ) as response:
        return response.status


@pytest.mark.parametrize("format", ["json", "xml"])
async def test_a_batch_is_accepted(client: Client, format: str) -> None:
    """A batch of clicks, as the forwarder renders it in either format, is answered 200."""
    body = formats.render(format, "rid-1", [SEED_DETAIL, {**SEED_DETAIL, "DeviceName": None}])
    assert await post(client, body, formats.CONTENT_TYPES[format]) == 200


async def test_a_clickthru_event_is_accepted(client: Client) -> None:
    """A first-click event (no ClickDetails) is answered 200."""
    body = formats.render("clickthru", "rid-1", [SEED_DETAIL])
    assert await post(client, body, formats.CONTENT_TYPES["clickthru"]) == 200


@pytest.mark.parametrize(
    "body", [b"", b"\xff\xfe not json", orjson.dumps({"anything": ["else"] * 100})]
)
async def test_anything_else_is_accepted_too(client: Client, body: Any) -> None:
    """An empty body, bytes that are not JSON and JSON of another shape are answered 200."""
    assert await post(client, body, "application/octet-stream") == 200
