"""The redirect server against hostile bytes on a raw TCP socket (issue 11).

Requests no HTTP client library would send: invalid UTF-8 and NUL in the
headers a click carries, oversized headers, unknown methods, bare LF line
ends, junk request lines, pipelined requests. Whatever comes in, no answer is
a 5xx, the server keeps answering, and every tap answered with a redirect
becomes exactly one click event on Kafka whose text is storable (valid UTF-8,
the bad bytes kept as replacement characters or escapes). The inputs are
fixed, so a failure repeats.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import pytest

from shortlink import clickevent
from tests.clicks import make_links
from tests.infra import RunningServer, all_published, consume, exchange

TARGET = "https://example.com/landing"
PHONE = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1"
# What invalid bytes may become in a click event: U+FFFD or \xNN escapes.
SANITISED = r"(?:\ufffd|\\x[0-9a-fA-F]{2})+"


@pytest.fixture
def redirect_env(redirect_env: dict[str, str]) -> dict[str, str]:
    """The session's redirect environment, behind a trusted proxy so X-Forwarded-For is read."""
    return {**redirect_env, "TRUSTED_PROXIES": "127.0.0.1/32"}


def req(
    token: str,
    *headers: bytes,
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    close: bool = True,
    eol: bytes = b"\r\n",
) -> bytes:
    """One request for /token with the given raw header lines."""
    lines = [method + b" /" + token.encode() + b" " + version, b"Host: 127.0.0.1", *headers]
    if close:
        lines.append(b"Connection: close")
    return eol.join(lines) + eol + eol


@dataclass(frozen=True)
class Case:
    """A raw request; if it is redirected, its click's `field` must match `expect` in full."""

    name: str
    request: Callable[[str], bytes]
    field: str | None = None
    expect: str = ""


def kept(valid: str) -> str:
    """The valid text as it was, then the invalid bytes sanitised."""
    return re.escape(valid) + SANITISED


def raw_path_tap(token: str) -> bytes:
    """A tap whose path holds a raw 0xFF byte in the middle of the token."""
    path = token[:3].encode() + b"\xff" + token[3:].encode()
    return b"GET /" + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


CASES = [
    Case(
        "user agent invalid UTF-8",
        lambda t: req(t, b"User-Agent: " + PHONE + b" \xff\xfe"),
        "user_agent",
        kept(PHONE.decode() + " "),
    ),
    Case(
        "referer invalid UTF-8",
        lambda t: req(t, b"User-Agent: " + PHONE, b"Referer: https://sms.example/\xc3\x28"),
        "referer",
        kept("https://sms.example/") + r"\(",
    ),
    Case(
        "user agent Latin-1",
        lambda t: req(t, b"User-Agent: " + PHONE + b" caf\xe9"),
        "user_agent",
        kept(PHONE.decode() + " caf"),
    ),
    Case(
        "x-forwarded-for invalid UTF-8",
        lambda t: req(t, b"User-Agent: " + PHONE, b"X-Forwarded-For: 203.0.113.9, \xff\xfe"),
        "client_ip",
        re.escape("127.0.0.1"),  # the last hop is not an address: the peer it is
    ),
    Case(
        "x-forwarded-for garbage",
        lambda t: req(
            t, b"User-Agent: " + PHONE, b"X-Forwarded-For: not-an-ip, 999.1.1.1, [::1, ::::, ,"
        ),
        "client_ip",
        re.escape("127.0.0.1"),
    ),
    Case("user agent NUL", lambda t: req(t, b"User-Agent: Mozilla/5.0 \x00 (iPhone)")),
    Case(
        "referer NUL",
        lambda t: req(t, b"User-Agent: " + PHONE, b"Referer: https://a\x00b/"),
    ),
    Case(
        "x-forwarded-for NUL",
        lambda t: req(t, b"User-Agent: " + PHONE, b"X-Forwarded-For: 203.0.113.9\x00"),
    ),
    Case(
        "user agent 8,000 bytes: cut to MAX_USER_AGENT characters",
        lambda t: req(t, b"User-Agent: " + PHONE + b"A" * (8000 - len(PHONE))),
        "user_agent",
        re.escape(PHONE.decode() + "A" * (clickevent.MAX_USER_AGENT - len(PHONE))),
    ),
    Case(
        "user agent 8 KiB",
        lambda t: req(t, b"User-Agent: " + PHONE + b"A" * (8192 - len(PHONE))),
    ),
    Case(
        "header 100 KiB",
        lambda t: req(t, b"User-Agent: " + PHONE, b"X-Junk: " + b"B" * 102_400),
    ),
    Case("200 headers", lambda t: req(t, *(b"X-H%d: v" % i for i in range(200)))),
    Case(
        "header line without colon",
        lambda t: req(t, b"User-Agent: " + PHONE, b"no colon here"),
    ),
    Case("unknown method BREW", lambda t: req(t, method=b"BREW")),
    Case("unknown method PROPFIND", lambda t: req(t, method=b"PROPFIND")),
    Case("lower-case method", lambda t: req(t, method=b"get")),
    Case("method with NUL", lambda t: req(t, method=b"GE\x00T")),
    Case("bare LF line ends", lambda t: req(t, b"User-Agent: " + PHONE, eol=b"\n")),
    Case("HTTP/0.9 request line", lambda t: b"GET /" + t.encode() + b"\r\n\r\n"),
    Case("HTTP/9.9", lambda t: req(t, version=b"HTTP/9.9")),
    Case("junk after the version", lambda t: req(t, version=b"HTTP/1.1 junk")),
    Case(
        "junk request line", lambda t: b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03junk\r\n\r\n"
    ),
    Case("raw non-ASCII path", raw_path_tap),
    Case("percent-encoded invalid UTF-8 path", lambda t: req("%ff%fe%00" + t)),
    Case(
        "absolute-form target",
        lambda t: req(t).replace(b"GET /", b"GET http://127.0.0.1/", 1),
    ),
    Case(
        "huge Content-Length",
        lambda t: req(t, b"Content-Length: 99999999999999999999999", close=True),
    ),
    Case(
        "chunked garbage body",
        lambda t: req(t, b"Transfer-Encoding: chunked", close=True)[:-2] + b"zz\r\n\r\n",
    ),
]


async def make_tokens(db: asyncpg.Connection, account_id: int, count: int) -> list[str]:
    links = await make_links(db, account_id, count, target_url=TARGET, phone_number="447700900123")
    return [link.token for link in links]


def assert_storable(event: clickevent.ClickEvent) -> None:
    """Every text field of the event can be stored in PostgreSQL text: UTF-8, no NUL."""
    for name in ("user_agent", "referer", "client_ip"):
        value = getattr(event, name)
        if value is not None:
            assert "\x00" not in value, f"{name} holds NUL: {value!r}"
            value.encode("utf-8")  # a lone surrogate would raise here


async def test_no_malformed_request_gets_a_5xx_and_the_server_keeps_answering(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """Every malformed request is answered below 500 (or the connection closed), and a plain
    tap right after each one is still a 302."""
    tokens = await make_tokens(db, account_id, 2 * len(CASES))
    answered: dict[str, list[int]] = {}
    after: dict[str, list[int]] = {}
    for case, token, plain in zip(CASES, tokens[::2], tokens[1::2], strict=True):
        answered[case.name] = await exchange(redirect_server, case.request(token))
        after[case.name] = await exchange(redirect_server, req(plain, b"User-Agent: " + PHONE))
    server_errors = {name: s for name, s in answered.items() if any(x >= 500 for x in s)}
    assert server_errors == {}
    assert {name: s for name, s in after.items() if s != [302]} == {}


async def test_every_redirected_tap_becomes_exactly_one_clean_click_event(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Each tap answered 302, malformed or plain, is one click event on Kafka; the taps whose
    only fault is undecodable header text are redirected, their bad bytes kept as U+FFFD or
    \\xNN escapes after the valid text."""
    tokens = await make_tokens(db, account_id, 2 * len(CASES))
    redirected: Counter[str] = Counter()
    case_of: dict[str, Case] = {}
    for case, token, plain in zip(CASES, tokens[::2], tokens[1::2], strict=True):
        case_of[token] = case
        for each, data in ((token, case.request(token)), (plain, req(plain))):
            redirected[each] += (await exchange(redirect_server, data)).count(302)
    not_kept = [c.name for t, c in case_of.items() if c.field is not None and redirected[t] != 1]
    assert not_kept == []
    await all_published(redirect_server)
    records = await consume(
        kafka_bootstrap, click_topic, redirected.total(), within=10, to_end=True
    )
    events = [clickevent.decode(record.value) for record in records]
    assert Counter(event.token for event in events) == +redirected, (
        f"{len(events)} click events for {redirected.total()} redirects"
    )
    for event in events:
        assert_storable(event)
        sent = case_of.get(event.token)
        if sent is not None and sent.field is not None:
            value = getattr(event, sent.field)
            assert re.fullmatch(sent.expect, value or ""), (sent.name, value)


async def test_pipelined_requests_are_answered_in_order_and_each_is_one_click(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Five requests written at once on one connection, one of them malformed in its headers,
    get five answers in order; each redirect is one click event."""
    first, second, third, fourth = await make_tokens(db, account_id, 4)
    pipeline = b"".join(
        [
            req(first, b"User-Agent: " + PHONE, close=False),
            req(second, b"User-Agent: " + PHONE + b" \xff", close=False),
            req("NoSuch12", close=False),
            req(third, method=b"HEAD", close=False),
            req(fourth, b"Referer: https://sms.example/\xfe"),
        ]
    )
    assert await exchange(redirect_server, pipeline) == [302, 302, 404, 302, 302]
    await all_published(redirect_server)
    records = await consume(kafka_bootstrap, click_topic, 4, within=10, to_end=True)
    events = [clickevent.decode(record.value) for record in records]
    assert sorted(event.token for event in events) == sorted([first, second, third, fourth])
    for event in events:
        assert_storable(event)


async def test_http10_and_closing_taps_are_redirected_by_aiohttps_own_response(
    redirect_server: RunningServer,
    db: asyncpg.Connection,
    account_id: int,
    kafka_bootstrap: str,
    click_topic: str,
) -> None:
    """Taps the ready-made head does not cover (HTTP/1.0, with and without keep-alive, and
    Connection: close) get the same Location, aiohttp's Connection handling, and a click each."""
    tokens = await make_tokens(db, account_id, 3)
    requests = [
        req(tokens[0], version=b"HTTP/1.0", close=False),
        req(tokens[1], b"Connection: keep-alive", version=b"HTTP/1.0", close=False),
        req(tokens[2]),
    ]
    heads = []
    for data in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", redirect_server.port)
        try:
            writer.write(data)
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
        finally:
            writer.close()
    for head in heads:
        assert re.match(rb"HTTP/1\.[01] 302 Found\r\n", head), head
        assert b"\r\nLocation: " + TARGET.encode() + b"\r\n" in head
        assert b"\r\nCache-Control: private, max-age=0\r\n" in head
    assert b"\r\nConnection: keep-alive\r\n" in heads[1]
    assert b"\r\nConnection: close\r\n" in heads[2]
    await all_published(redirect_server)
    records = await consume(kafka_bootstrap, click_topic, 3, within=10, to_end=True)
    assert sorted(clickevent.decode(r.value).token for r in records) == sorted(tokens)


async def test_a_connect_target_is_never_taken_for_a_token(
    redirect_server: RunningServer, db: asyncpg.Connection, account_id: int
) -> None:
    """CONNECT's authority-form target has no "/": "x" + a token, or + healthz, is not a
    path of ours (404, no lookup), though dropping its first character would make one."""
    [token] = await make_tokens(db, account_id, 1)
    for target in (f"x{token}", "xhealthz", "xreadyz"):
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        assert await exchange(redirect_server, request.encode()) == [404]
