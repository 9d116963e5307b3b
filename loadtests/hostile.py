"""The hostile traffic of a `make chaos` window (issue 21, point 6): its inputs and runner.

Taps, over raw sockets (loadtests/taps.py `RawTaps`) on the bench campaign's
links, so their 302s are counted, recorded and delivered like any other:

- a User-Agent whose browser family, for ua-parser, is 3,000 random letters
  (`<letters>/1.0 CFNetwork/1240.0.4 Darwin/20.6.0`: before issue 21 this one
  tap stopped the forwarder for everyone), and one of 12 random letters (each
  tap a new browser: the campaign's breakdown grows to its cap);
- random bytes in User-Agent, Referer, X-Forwarded-For, Cookie and Host (no CR
  or LF): those HTTP allows in a header value (visible ASCII, space and the
  high bytes), or any byte (which aiohttp's parser refuses with a 400);
- odd methods (PROPFIND; made-up tokens, which aiohttp's parser refuses) and
  odd paths (the token percent-encoded, overlong, behind `/../`; raw high bytes,
  refused by the parser).

API requests, each sent a few times with its own timeout, as the hostile
account (its own API key: the bench account's endpoint is left alone): a session
cookie that is not UTF-8 on the dashboard and the CSV routes, a sign-in form in
an unknown charset, endpoint and callback hosts with a 64-character label,
conversion metadata nested 300 levels, a template message whose answer would be
5,000 x 100 KB (once: where that answer is built in full it takes 5 to 15 s
under the chaos load, and three of them would outlast the window), odd methods
and bad Authorization headers.

Random parts come from one `random.Random(seed)`, drawn in the order the taps
are sent, so a run repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from .bench_system import PHONE
from .faults import Injected
from .taps import NO_ANSWER, RawTaps, raw_exchange

SEED = 21
CAMPAIGN = "hostile"  # the hostile account's campaign
CFNETWORK = b"/1.0 CFNetwork/1240.0.4 Darwin/20.6.0"
PHONE_UA = b"User-Agent: " + PHONE.encode()
_LETTERS = string.ascii_letters.encode()
# RFC 9110 token characters: what a method may be made of.
_TCHARS = (string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~").encode()
# What HTTP lets a header value hold (RFC 9110: visible ASCII, space, obs-text), and any byte.
_TEXT_AND_HIGH = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_ANY_BUT_LINE_ENDS = bytes(b for b in range(0x100) if b not in b"\r\n")
_HIGH = bytes(range(0x80, 0x100))
# Header lines a stranger can fill; each gets random bytes in the header-bytes variants.
_STRANGER_HEADERS = (b"User-Agent", b"Referer", b"X-Forwarded-For", b"Cookie", b"Host")

API_ROUNDS = 3  # times an API request is sent in the window, unless it says fewer
API_TIMEOUT = 10.0  # seconds to the status line, per API request
MESSAGES_TIMEOUT = 30.0  # the 5,000-recipient template request, until it is refused early
MESSAGES_RECIPIENTS = 5_000
MESSAGES_VALUE = 100_000  # characters of the template value that is not a link
METADATA_DEPTH = 300


def request_bytes(
    method: bytes, target: bytes, *headers: bytes, body: bytes | None = None
) -> bytes:
    """One HTTP/1.1 request on a connection the server is asked to close; Host 127.0.0.1
    unless `headers` name one, Content-Length when there is a body."""
    lines = [method + b" " + target + b" HTTP/1.1"]
    if not any(line.lower().startswith(b"host:") for line in headers):
        lines.append(b"Host: 127.0.0.1")
    lines += headers
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def _choose(rng: random.Random, alphabet: bytes, length: int) -> bytes:
    return bytes(rng.choices(alphabet, k=length))


def made_up_browser(rng: random.Random, letters: int) -> bytes:
    """A User-Agent line whose browser family, for ua-parser, is `letters` random letters."""
    return b"User-Agent: " + _choose(rng, _LETTERS, letters) + CFNETWORK


def _stranger_headers(rng: random.Random, alphabet: bytes) -> list[bytes]:
    return [
        name + b": " + _choose(rng, alphabet, rng.randint(1, 300)) for name in _STRANGER_HEADERS
    ]


def _get(token: str, *headers: bytes) -> bytes:
    return request_bytes(b"GET", b"/" + token.encode(), *headers)


# Each hostile tap: its variant's name -> the request on a token, random parts from rng.
TAP_VARIANTS: dict[str, Callable[[random.Random, str], bytes]] = {
    "3,000-letter browser": lambda rng, token: _get(token, made_up_browser(rng, 3_000)),
    "new browser family": lambda rng, token: _get(token, made_up_browser(rng, 12)),
    "header bytes 0x20-0xFF but DEL": lambda rng, token: _get(
        token, *_stranger_headers(rng, _TEXT_AND_HIGH)
    ),
    "header bytes but CR LF": lambda rng, token: _get(
        token, *_stranger_headers(rng, _ANY_BUT_LINE_ENDS)
    ),
    "PROPFIND": lambda rng, token: request_bytes(b"PROPFIND", b"/" + token.encode(), PHONE_UA),
    "made-up method": lambda rng, token: request_bytes(
        _choose(rng, _TCHARS, rng.randint(1, 16)), b"/" + token.encode(), PHONE_UA
    ),
    "percent-encoded token": lambda rng, token: request_bytes(
        b"GET", b"/" + "".join(f"%{ord(c):02X}" for c in token).encode(), PHONE_UA
    ),
    "overlong path": lambda rng, token: request_bytes(
        b"GET", b"/" + token.encode() + b"/" + _choose(rng, _LETTERS, 6_000), PHONE_UA
    ),
    "dot-dot path": lambda rng, token: request_bytes(b"GET", b"/../" + token.encode(), PHONE_UA),
    "raw high bytes in path": lambda rng, token: request_bytes(
        b"GET", b"/" + token.encode() + _choose(rng, _HIGH, rng.randint(1, 20)), PHONE_UA
    ),
}


def hostile_taps(port: int, tokens: list[str], rate: float, seed: int = SEED) -> RawTaps:
    """Taps cycling through TAP_VARIANTS on random `tokens`, random parts from `seed`."""
    rng = random.Random(seed)
    names = list(TAP_VARIANTS)

    def make(n: int) -> tuple[str, bytes]:
        name = names[n % len(names)]
        return name, TAP_VARIANTS[name](rng, rng.choice(tokens))

    return RawTaps(port, rate, make, names)


@dataclass(frozen=True)
class ApiRequest:
    name: str
    request: bytes
    timeout: float = API_TIMEOUT
    times: int = API_ROUNDS


def _json(method: bytes, target: bytes, key: str, value: object) -> bytes:
    body = value if isinstance(value, bytes) else orjson.dumps(value)
    return request_bytes(
        method,
        target,
        b"Authorization: Bearer " + key.encode(),
        b"Content-Type: application/json",
        body=body,
    )


def nested(depth: int) -> bytes:
    """{"a":{"a": ... {}}}, `depth` objects deep, as JSON text (orjson writes at most 255
    levels, so it is written here)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def api_requests(key: str, token: str, campaign: str) -> list[ApiRequest]:
    """The hostile API requests of the account whose API key is `key`, one of whose links
    is `token`, in the campaign `campaign`."""
    bad_cookie = b"Cookie: shortlink_session=\xff"
    bearer = b"Authorization: Bearer " + key.encode()
    csv = f"/v1/campaigns/{campaign}".encode()
    long_label = "a" * 64
    return [
        ApiRequest("dashboard, cookie \\xff", request_bytes(b"GET", b"/dashboard/", bad_cookie)),
        ApiRequest(
            "clicks.csv, cookie \\xff", request_bytes(b"GET", csv + b"/clicks.csv", bad_cookie)
        ),
        ApiRequest(
            "recipients.csv, cookie \\xff",
            request_bytes(b"GET", csv + b"/recipients.csv", bad_cookie),
        ),
        ApiRequest(
            "sign-in, charset=bogus",
            request_bytes(
                b"POST",
                b"/dashboard/signin",
                b"Content-Type: application/x-www-form-urlencoded; charset=bogus",
                b"Sec-Fetch-Site: same-origin",  # past the cross-site check, to the form
                body=b"api_key=" + key.encode() + b"&next=%2Fdashboard%2Fcampaigns",
            ),
        ),
        ApiRequest(
            "endpoint, 64-letter host label",
            _json(
                b"PUT",
                b"/v1/endpoint",
                key,
                {"url": f"https://{long_label}.example.com/hook", "format": "json"},
            ),
        ),
        ApiRequest(
            "links, 64-letter callback host label",
            _json(
                b"POST",
                b"/v1/links",
                key,
                {
                    "url": "https://shop.example/x",
                    "client_identifier": campaign,
                    "recipients": [{"phone_number": "+447700900123", "client_ref": "h1"}],
                    "callback_url": f"https://{long_label}.example.com/clicked",
                },
            ),
        ),
        ApiRequest(
            f"conversion, metadata {METADATA_DEPTH} deep",
            _json(
                b"POST",
                b"/v1/conversions",
                key,
                orjson.dumps({"token": token, "event": "purchase", "disposition": "positive"})[:-1]
                + b',"metadata":'
                + nested(METADATA_DEPTH)
                + b"}",
            ),
        ),
        ApiRequest(
            f"messages, {MESSAGES_RECIPIENTS:,} x 100 KB template",
            _json(
                b"POST",
                b"/v1/messages",
                key,
                {
                    "mode": "template",
                    "body": "Sale: {#var#} {#var#}",
                    "vars": ["https://shop.example/x", "A" * MESSAGES_VALUE],
                    "to": [f"+447700{900000 + i}" for i in range(MESSAGES_RECIPIENTS)],
                    "client_identifier": campaign,
                },
            ),
            timeout=MESSAGES_TIMEOUT,
            times=1,
        ),
        ApiRequest("PROPFIND /v1/links", request_bytes(b"PROPFIND", b"/v1/links", bearer)),
        ApiRequest("made-up method /v1/links", request_bytes(b"FR0B!", b"/v1/links", bearer)),
        ApiRequest(
            "authorization not UTF-8",
            request_bytes(b"GET", b"/v1/endpoint", b"Authorization: Bearer sl_\xff\xfe\xc3("),
        ),
        ApiRequest(
            "authorization Basic",
            request_bytes(b"GET", b"/v1/endpoint", b"Authorization: Basic dXNlcjpwYXNz"),
        ),
        ApiRequest(
            "authorization 7 KiB",
            request_bytes(b"GET", b"/v1/endpoint", b"Authorization: Bearer " + b"A" * 7_000),
        ),
    ]


@dataclass
class ApiAnswers:
    """One API request's answers by status (NO_ANSWER: none within its timeout), and the
    longest wait for one."""

    statuses: Counter[int] = field(default_factory=Counter)
    slowest: float = 0.0


@dataclass
class Hostile:
    """The hostile window: `taps` for its duration while the API requests are sent one at
    a time, in up to API_ROUNDS rounds spread over the window (each request in as many as
    its `times`)."""

    taps: RawTaps
    api_port: int
    requests: list[ApiRequest]
    answers: dict[str, ApiAnswers] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for request in self.requests:
            self.answers.setdefault(request.name, ApiAnswers())

    async def run(self, seconds: float) -> Injected:
        """Until the taps' `seconds` are over and every API request has its answers. The
        window ends, for the report, when the last hostile tap was answered: the API
        requests make no clicks (the note says when they were done)."""
        began = time.time()
        tapping = asyncio.create_task(self._tap(began + seconds), name="hostile taps")
        try:
            for round_ in range(API_ROUNDS):
                await asyncio.sleep(max(0.0, began + round_ * seconds / API_ROUNDS - time.time()))
                for request in self.requests:
                    if round_ < request.times:
                        await self._send(request)
            api_done = time.time()
            taps_done = await tapping
        finally:
            if not tapping.done():
                tapping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tapping
        sent = self.taps.tally.total().total()
        answers = self.answers.values()
        errors = sum(n for a in answers for status, n in a.statuses.items() if status >= 500)
        unanswered = sum(a.statuses[NO_ANSWER] for a in answers)
        note = (
            f"{sent:,} hostile taps at {self.taps.rate:,.0f}/s for {seconds:.0f} s; "
            f"{sum(a.statuses.total() for a in answers)} API requests ({len(self.requests)} "
            f"kinds), done after {api_done - began:.1f} s: {errors} answered 5xx, "
            f"{unanswered} unanswered"
        )
        return Injected(note, began, taps_done)

    async def _tap(self, until: float) -> float:
        await self.taps.run(until)
        return time.time()

    async def _send(self, request: ApiRequest) -> None:
        status, took = await raw_exchange(self.api_port, request.request, request.timeout)
        answers = self.answers[request.name]
        answers.statuses[status] += 1
        answers.slowest = max(answers.slowest, took)
