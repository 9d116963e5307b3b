"""The demo endpoint of `make run`: one printed line per forwarded click."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from forwarder import formats
from shortlink.dev import demosink


def click(link_id: int, phone: str, device: str | None) -> formats.Detail:
    """A ClickDetail as the forwarder renders it."""
    return {
        "TrackingUrlId": link_id,
        "UserId": 1,
        "PhoneNumber": phone,
        "TrackedUrl": "https://example.com/",
        "ClientIdentifier": "demo",
        "ClientRef": "m1",
        "UserAgent": "Mozilla/5.0 (iPhone)",
        "Referrer": "127.0.0.1",
        "DeviceName": device,
        "DeviceManufacturer": None,
        "IsWarningPageServed": False,
        "ShortenDate": 1_767_225_600_000,
        "ClickDate": 1_767_225_660_000 + link_id,
    }


BATCH = [click(41, "447700900123", "iPhone"), click(42, "447700900124", None)]


@pytest.mark.parametrize("format", ["json", "xml"])
def test_a_batch_is_one_line_per_click(format: str) -> None:
    """A ClickForward batch of two clicks, JSON or XML, prints two lines naming each click."""
    body = formats.render(format, "5b0c6d1e-0000-4000-8000-000000000000", BATCH)
    lines = demosink.summaries(body, formats.CONTENT_TYPES[format])
    assert len(lines) == 2
    assert lines[0].startswith("click 1/2: TrackingUrlId 41, PhoneNumber 447700900123, iPhone")
    assert lines[1].startswith("click 2/2: TrackingUrlId 42, PhoneNumber 447700900124, ")
    assert "Mozilla/5.0 (iPhone)" in lines[1]  # no device name: the user agent


def test_an_event_or_other_body_is_one_line() -> None:
    """A CLICKTHRU event is one line of its JSON; a body that is not JSON is its size."""
    event = formats.render_clickthru_event("5b0c6d1e-0000-4000-8000-000000000000", BATCH[0])
    [line] = demosink.summaries(event, "application/json")
    assert '"new_state":"CLICKTHRU"' in line
    assert demosink.summaries(b"\xff\x00", "text/plain") == ["2 bytes of text/plain"]


async def test_the_endpoint_prints_each_click_and_answers_200(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """POST /hook answers 200 and prints one line per click, with the request identifier."""
    client = await aiohttp_client(demosink.create_app())
    body = formats.render("json", "5b0c6d1e-0000-4000-8000-000000000000", BATCH)
    answer = await client.post("/hook", data=body, headers={"X-Request-Identifier": "r-1"})
    assert answer.status == 200
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"demo endpoint received r-1: {line}"
        for line in demosink.summaries(body, "application/json")
    ]
    assert len(printed) == 2
