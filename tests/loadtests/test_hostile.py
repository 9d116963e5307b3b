"""The hostile window's inputs and runner (loadtests/hostile.py): taps and API requests as
sent, and a short window against a bare aiohttp app."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtests.hostile import (
    API_ROUNDS,
    CFNETWORK,
    TAP_VARIANTS,
    Hostile,
    api_requests,
    hostile_taps,
)
from loadtests.taps import NO_ANSWER

TOKENS = ["AbCdEf1", "GhIjKl2", "MnOpQr3"]
KEY = "sl_" + "k" * 43
# Variants meant to break HTTP itself: aiohttp's parser answers them 400.
REFUSED_BY_PARSER = {"header bytes but CR LF", "made-up method", "raw high bytes in path"}


def every_request() -> list[tuple[str, bytes]]:
    """Each tap variant twice (fresh random parts) and each API request, by name."""
    make = hostile_taps(8080, TOKENS, rate=1).make
    taps = [make(n) for n in range(2 * len(TAP_VARIANTS))]
    api = [(r.name, r.request) for r in api_requests(KEY, TOKENS[0], "hostile")]
    return taps + api


def test_taps_repeat_for_a_seed() -> None:
    """The same seed makes the same taps byte for byte; another seed, other random parts."""
    first, again, other = (hostile_taps(8080, TOKENS, 1, seed=s).make for s in (7, 7, 8))
    made = [first(n) for n in range(50)]
    assert made == [again(n) for n in range(50)]
    assert made != [other(n) for n in range(50)]
    assert [name for name, _ in made[: len(TAP_VARIANTS)]] == list(TAP_VARIANTS)


def test_every_request_is_one_http_message() -> None:
    """Each tap and API request is a request line, header lines with no CR or LF inside, a
    blank line and exactly Content-Length bytes of body (none without one)."""
    for name, request in every_request():
        head, blank, body = request.partition(b"\r\n\r\n")
        assert blank, name
        request_line, *headers = head.split(b"\r\n")
        method, target, version = request_line.split(b" ")
        assert method, name
        assert target.startswith(b"/"), name
        assert version == b"HTTP/1.1", name
        for line in [request_line, *headers]:
            assert b"\r" not in line, name
            assert b"\n" not in line, name
        fields = dict(line.split(b": ", 1) for line in headers)
        assert fields.get(b"Content-Length", b"0") == str(len(body)).encode(), name


def test_made_up_browsers_carry_their_letters() -> None:
    """The issue's taps: a User-Agent of 3,000 random letters, or 12, before CFNetwork."""
    make = hostile_taps(8080, TOKENS, rate=1).make
    made = dict(make(n) for n in range(len(TAP_VARIANTS)))
    for name, letters in (("3,000-letter browser", 3_000), ("new browser family", 12)):
        [agent] = [line for line in made[name].split(b"\r\n") if line.startswith(b"User-Agent: ")]
        browser = agent.removeprefix(b"User-Agent: ").removesuffix(CFNETWORK)
        assert len(browser) == letters
        assert set(browser.decode()) <= set(string.ascii_letters)


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def test_a_window_sends_every_variant_and_request(
    aiohttp_server: Callable[..., Any],
) -> None:
    """A second of the window against a bare app answering 200 to anything: every tap
    variant is sent and answered (200, or the parser's 400 for those meant to break HTTP),
    every API request is answered as many times as it says, and the tally agrees."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server: TestServer = await aiohttp_server(app)
    assert server.port is not None
    window = Hostile(
        hostile_taps(server.port, TOKENS, rate=40),
        server.port,
        api_requests(KEY, TOKENS[0], "hostile"),
    )
    done = await window.run(1.0)
    assert done.ended >= done.began
    for name, statuses in window.taps.by_variant.items():
        assert set(statuses) == ({400} if name in REFUSED_BY_PARSER else {200}), name
    assert set(window.taps.by_variant) == set(TAP_VARIANTS)
    answered = window.taps.tally.total()
    assert answered.total() == sum(c.total() for c in window.taps.by_variant.values())
    assert NO_ANSWER not in answered
    for request in window.requests:
        expected = 400 if request.name.startswith("made-up method") else 200
        assert window.answers[request.name].statuses == {expected: request.times}, request.name
    assert sorted({r.times for r in window.requests}) == [1, API_ROUNDS]
