"""The demo customer endpoint `make run` starts: it accepts whatever the forwarder sends
and prints one line per click."""

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
RID = "5b0c6d1e-0000-4000-8000-000000000000"
BATCH = [
    {**SEED_DETAIL, "TrackingUrlId": 41, "PhoneNumber": "447700900123", "DeviceName": "iPhone"},
    {**SEED_DETAIL, "TrackingUrlId": 42, "PhoneNumber": "447700900124", "DeviceName": None},
]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    """The demo endpoint's app on a test server."""
    return await aiohttp_client(demosink.create_app())


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


@pytest.mark.parametrize("format", ["json", "xml"])
def test_a_batch_is_one_line_per_click(format: str) -> None:
    """A ClickForward batch of two clicks, JSON or XML, prints two lines naming each click."""
    body = formats.render(format, RID, BATCH)
    lines = demosink.summaries(body, formats.CONTENT_TYPES[format])
    assert len(lines) == 2
    assert lines[0].startswith("click 1/2: TrackingUrlId 41, PhoneNumber 447700900123, iPhone")
    assert lines[1].startswith("click 2/2: TrackingUrlId 42, PhoneNumber 447700900124, ")
    assert SEED_DETAIL["UserAgent"] in lines[1]  # no device name: the user agent


def test_an_event_or_other_body_is_one_line() -> None:
    """A CLICKTHRU event is one line of its JSON; a body that is not JSON is its size."""
    event = formats.render_clickthru_event(RID, BATCH[0])
    [line] = demosink.summaries(event, "application/json")
    assert '"new_state":"CLICKTHRU"' in line
    assert demosink.summaries(b"\xff\x00", "text/plain") == ["2 bytes of text/plain"]


async def test_the_endpoint_prints_each_click(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """POST /hook prints one line per click, with the request identifier."""
    body = formats.render("json", RID, BATCH)
    assert await post(client, body, formats.CONTENT_TYPES["json"]) == 200
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"demo endpoint received rid-1: {line}"
        for line in demosink.summaries(body, "application/json")
    ]
    assert len(printed) == 2
