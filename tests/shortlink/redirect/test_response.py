"""The redirect's ready-made head against aiohttp's own StreamResponse, byte for byte."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import pytest
from aiohttp import web

from shortlink.redirect.response import CACHE_CONTROL, Heads, Redirect, encodable

LOCATIONS = [
    "https://example.com/landing?utm_source=sms&x=%20y",
    "https://例え.jp/パス?q=ü",  # not what the API stores (it encodes), but aiohttp takes it
    "https://example.com/a\tb",  # a tab is allowed in a header value
]
DATE = re.compile(rb"\r\nDate: ([^\r]*)\r\n")


@pytest.fixture
async def both() -> AsyncIterator[int]:
    """A low-level aiohttp server: /fast/N answers Redirect, /slow/N StreamResponse."""
    heads = {status: Heads(status) for status in (301, 302, 303, 307, 308)}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        _, kind, status_text, index = request.path.split("/")
        status, location = int(status_text), LOCATIONS[int(index)]
        if kind == "fast":
            encoded = encodable(location)
            assert encoded is not None
            return Redirect(status, heads[status].head(encoded, time.time()))
        response = web.StreamResponse(
            status=status, headers={"Location": location, "Cache-Control": CACHE_CONTROL}
        )
        response.content_length = 0
        return response

    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = runner.server
    assert server is not None
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send the requests one after the other on one connection; each answer's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    heads = []
    try:
        for request in requests:
            writer.write(request)
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
    finally:
        writer.close()
    return heads


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_ready_made_head_is_the_bytes_aiohttp_writes(both: int, method: str) -> None:
    """For every redirect status and kind of Location, GET and HEAD: the same bytes as aiohttp's."""
    for status in (301, 302, 303, 307, 308):
        for index in range(len(LOCATIONS)):
            fast, slow = await exchange(
                both,
                [
                    request(method, f"/fast/{status}/{index}"),
                    request(method, f"/slow/{status}/{index}"),
                ],
            )
            dates = [DATE.search(head) for head in (fast, slow)]
            assert all(dates), (fast, slow)
            for found in dates:
                assert found is not None
                assert abs(parsedate_to_datetime(found[1].decode()).timestamp() - time.time()) < 5
            assert DATE.sub(b"\r\nDate: -\r\n", fast) == DATE.sub(b"\r\nDate: -\r\n", slow)
            assert fast.startswith(f"HTTP/1.1 {status} ".encode())


async def test_a_connection_stays_open_across_ready_made_redirects(both: int) -> None:
    """Keep-alive: many redirects answered one after the other on one connection."""
    heads = await exchange(both, [request("GET", "/fast/302/0")] * 50)
    assert len(heads) == 50
    assert all(b"\r\nLocation: https://example.com/landing" in head for head in heads)
    assert not any(b"Connection:" in head for head in heads)


def test_encodable_refuses_what_aiohttp_would_refuse_in_a_header() -> None:
    """Control characters (but tab) and lone surrogates keep a link on aiohttp's own path."""
    assert encodable("https://example.com/a\tb") == b"https://example.com/a\tb"
    assert encodable("https://example.com/ü") == "https://example.com/ü".encode()
    for bad in ("\r", "\n", "\x00", "\x1f", "\x7f", "\ud800"):
        assert encodable(f"https://example.com/{bad}x") is None
