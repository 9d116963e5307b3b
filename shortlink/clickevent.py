"""The click event: the one wire format between the redirect server and the forwarder.

The redirect server publishes one event per recorded click to the click topic,
keyed by token. The value is a JSON array (orjson), a version number followed
by the fields of ClickEvent in their declared order:

    [1,                                   format version
     "0190c5a2-5d1e-7a3c-9f00-1b2c3d4e5f60",  event_id: UUIDv7, unique per click
     "AbC12xY", 716005, 1,                token, link_id (TrackingUrlId), account_id (UserId)
     "https://...",                       target_url at the time of the click
     "447700900000", "msg-1", "campaign", phone_number, client_ref, client_identifier (or null)
     1382000166965, 1382000769338,        shortened_at_ms, clicked_at_ms: ms since the epoch, UTC
     "Mozilla/5.0 ...", "203.0.113.9", null,  user_agent, client_ip, referer (or null)
     "GET", false,                        method, warning_page_served
     "https://...", 0, 1]                 destination, rule_index, variant_index: only on a
                                          link with rules or variants (shortlink.rules); a
                                          plain link's event ends after warning_page_served

Texts a client sends are bounded (the redirect server truncates them when it
encodes the event, and `decode` again for events of an older release): user_agent
MAX_USER_AGENT characters, referer MAX_REFERER, client_ip MAX_CLIENT_IP. A click
is never refused for its length; its text is cut.

An array rather than an object because the redirect server encodes one per click
on its hot path: measured 0.4 us against 1.3 us for the same fields as an object.
A new field is appended (readers ignore what they do not know); a change of
meaning needs a new version number.

Only raw facts travel: parsing user agents, bot detection and counting belong to
the forwarder. Both services import this module; nothing else defines the format.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from shortlink.exceptions import InvalidClickEvent
from shortlink.links import LinkEntry

VERSION = 1
# Longest texts an event carries from a request (characters; docs/redirect.md). Real
# user agents stay under 512 and real Referers are URLs (2,048, as targets are).
MAX_USER_AGENT = 1024
MAX_REFERER = 2048
MAX_CLIENT_IP = 64  # an IPv6 address with a zone id; anything longer is not an address
# Lone surrogates: what aiohttp makes of header bytes that are not UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


class ClickEvent(NamedTuple):
    """One click, decoded. A NamedTuple: the forwarder builds thousands a second."""

    event_id: str
    token: str
    link_id: int
    account_id: int
    target_url: str
    phone_number: str | None
    client_ref: str | None
    client_identifier: str | None
    shortened_at_ms: int
    clicked_at_ms: int
    user_agent: str | None
    client_ip: str | None
    referer: str | None
    method: str
    warning_page_served: bool
    # Where a link with rules or variants sent the tap, the rule that matched and the
    # link's variant (each null when none); all three null for a plain link.
    destination: str | None = None
    rule_index: int | None = None
    variant_index: int | None = None


# Where a smart link's tap went: (destination, rule index, variant index).
Smart = tuple[str, int | None, int | None]


# The raw facts of one click, as the redirect server encodes them: the link's fields
# (token, link_id, account_id, target_url, phone_number, client_ref,
# client_identifier, shortened_at_ms), then clicked_at_ms, user_agent, client_ip,
# referer, method, warning_page_served: the event's fields after its id.
ClickFacts = tuple[
    str,
    int,
    int,
    str,
    str | None,
    str | None,
    str | None,
    int,
    int,
    str | None,
    str | None,
    str | None,
    str,
    bool,
]


def facts(
    link: LinkEntry,
    clicked_at: float,
    user_agent: str | None,
    client_ip: str | None,
    referer: str | None,
    method: str,
    warning_page_served: bool,
) -> ClickFacts:
    """The facts of a click on `link` (tests and tools that make events of their own)."""
    return (
        link.token,
        link.id,
        link.account_id,
        link.target_url,
        link.phone_number,
        link.client_ref,
        link.client_identifier,
        link.created_at_ms,
        int(clicked_at * 1000),
        user_agent,
        client_ip,
        referer,
        method,
        warning_page_served,
    )


class EventIds:
    """UUIDv7 event ids, cheap enough to make one per click.

    48 bits of millisecond time (when the id is made, in the flush), the version
    (7), then 42 bits fixed at random for this process and a 32-bit counter
    (starting at a random value): unique within the process by the counter,
    across processes by the random bits. Time-ordered ids also keep the
    forwarder's primary-key index compact. Ids are made a batch at a time: one
    time prefix, then only the counter changes.
    """

    def __init__(self) -> None:
        random_bits = int.from_bytes(os.urandom(8), "big")
        rand_a = random_bits >> 52  # 12 bits
        rand_b_high = (random_bits >> 38) & 0x3FFF  # 14 bits after the variant
        rand_b_low = (random_bits >> 22) & 0xFFFF  # 16 bits before the counter
        # ...-7aaa-Vbbb-cccc<counter>: version 7, variant 0b10.
        self._fixed = f"-7{rand_a:03x}-{0x8000 | rand_b_high:04x}-{rand_b_low:04x}"
        self._counter = int.from_bytes(os.urandom(4), "big")
        self._fixed_bytes = self._fixed.encode()
        self._last_ms = -1
        self._last_prefix = b""
        self._last_high = -1
        self._high = b""
        self._hex4 = _hex4()

    def take(self, count: int, now_ms: int) -> list[str]:
        """`count` fresh ids stamped with `now_ms`."""
        start = self._advance(count)
        prefix = self._prefix(now_ms)
        return [f"{prefix}{n & 0xFFFFFFFF:08x}" for n in range(start, start + count)]

    def take_bytes(self, count: int, now_ms: int) -> list[bytes]:
        """The same as `take`, as ASCII bytes (for `assemble`), with no formatting per id."""
        start = self._advance(count)
        prefix = self._prefix(now_ms).encode()
        hex4 = _hex4()
        return [
            prefix + hex4[n >> 16 & 0xFFFF] + hex4[n & 0xFFFF] for n in range(start, start + count)
        ]

    def next_bytes(self, now_ms: int) -> bytes:
        """One fresh id stamped with `now_ms`, as `take_bytes` makes it: made per click, when
        the click is journaled (shortlink.redirect.journal), so the time prefix is kept
        while the millisecond lasts and only the counter's digits change."""
        n = self._counter = (self._counter + 1) & 0xFFFFFFFF
        hex4 = self._hex4
        if now_ms != self._last_ms:
            # `_prefix`, from the parts: the top 32 bits of the time change every 65 s.
            self._last_ms = now_ms
            high = now_ms >> 16 & 0xFFFFFFFF
            if high != self._last_high:
                self._last_high = high
                self._high = b"%08x-" % high
            self._last_prefix = self._high + hex4[now_ms & 0xFFFF] + self._fixed_bytes
        return self._last_prefix + hex4[n >> 16] + hex4[n & 0xFFFF]

    def _advance(self, count: int) -> int:
        start = self._counter + 1
        self._counter = (self._counter + count) & 0xFFFFFFFF
        return start

    def _prefix(self, now_ms: int) -> str:
        time_hex = f"{now_ms & 0xFFFFFFFFFFFF:012x}"
        return f"{time_hex[:8]}-{time_hex[8:]}{self._fixed}"


@functools.cache
def _hex4() -> list[bytes]:
    """Every 16-bit number as four hex digits: 2.4 MiB, made once by a process that publishes."""
    return [b"%04x" % n for n in range(1 << 16)]


def encode_many(event_ids: Sequence[str], clicks: Sequence[ClickFacts]) -> list[bytes]:
    """The message values of a batch of clicks, one id each (the flusher's hot loop).

    Never raises for what a client sent: a header aiohttp could only decode with
    surrogate escapes (bytes that are not UTF-8) cannot be JSON, so that click is
    encoded again with the bad bytes as U+FFFD (see `sanitise`); the click is kept.
    """
    return [
        _dumps_sanitised((VERSION, event_id, *click[:9], *bounded(*click[9:12]), *click[12:]))
        for event_id, click in zip(event_ids, clicks, strict=True)
    ]


def bounded(
    user_agent: str | None, client_ip: str | None, referer: str | None
) -> tuple[str | None, str | None, str | None]:
    """The texts of a click cut to their maximum lengths (MAX_USER_AGENT and the rest)."""
    if user_agent is not None and len(user_agent) > MAX_USER_AGENT:
        user_agent = user_agent[:MAX_USER_AGENT]
    if client_ip is not None and len(client_ip) > MAX_CLIENT_IP:
        client_ip = client_ip[:MAX_CLIENT_IP]
    if referer is not None and len(referer) > MAX_REFERER:
        referer = referer[:MAX_REFERER]
    return user_agent, client_ip, referer


# -- encoding ahead: what the redirect server's flusher uses ---------------------
#
# The fields of an event come from three places: the link's group (shared by
# every link one request created), the link itself, and the click. The first two
# are the same for every click on a link, so a redirect worker encodes them once,
# when it caches the link (`group_fields`, `link_fields`), and an event is then
# one join of bytes (`assemble`) with only the click's own fields encoded per
# click: measured 3.4x faster than `encode_many` (decoding the cached link and
# encoding it again, per click). The bytes are exactly `encode`'s (a test checks).

GroupFields = tuple[bytes, bytes]
_EVENT_START = b'[%d,"' % VERSION


def group_fields(
    account_id: int, target_url: str, client_identifier: str | None, shortened_at_ms: int
) -> GroupFields:
    """A link group's fields of an event, encoded: `,account_id,target_url` and
    `,client_identifier,shortened_at_ms,` (each lies between two of the link's fields)."""
    return (
        b"," + _dumps_sanitised((account_id, target_url))[1:-1],
        b"," + _dumps_sanitised((client_identifier, shortened_at_ms))[1:-1] + b",",
    )


def link_fields(link_id: int, phone_number: str | None, client_ref: str | None) -> bytes:
    """A link's own fields of an event, encoded: the length of link_id's digits (one
    byte), the digits, then `,phone_number,client_ref`."""
    if type(link_id) is not int:  # orjson would write null or a float: not a link id
        raise TypeError(f"link_id must be an int, not {type(link_id).__name__}")
    # One encoding of all three (half the time of two): `[digits,phone,client_ref]`, the
    # digits exactly encode()'s; orjson refuses an int that does not fit in 64 bits.
    encoded = _dumps_sanitised((link_id, phone_number, client_ref))
    return _DIGITS_LENGTH[encoded.index(b",") - 1] + encoded[1:-1]


_DIGITS_LENGTH = [bytes((n,)) for n in range(21)]  # a 64-bit int has at most 20 characters


def read_link_fields(data: bytes, at: int = 0) -> tuple[int, str | None, str | None]:
    """(link_id, phone_number, client_ref) of `link_fields` bytes starting at `at`."""
    split = at + 1 + data[at]
    phone_number, client_ref = orjson.loads(b"[" + data[split + 1 :] + b"]")
    return int(data[at + 1 : split]), phone_number, client_ref


def assemble(
    event_id: bytes,
    token: bytes,
    link: bytes,
    at: int,
    group: GroupFields,
    clicked_at_ms: int,
    user_agent: str | None,
    client_ip: str | None,
    referer: str | None,
    method: str,
    warning_page_served: bool,
    smart: Smart | None = None,
) -> bytes:
    """The message value of one click, from its parts encoded ahead: `link` holds
    `link_fields` from `at` to its end. The token is letters and digits (no escaping).
    Never raises for what a client sent (see `encode_many`); long texts are cut (`bounded`)."""
    # `bounded`, inlined: this runs once per click in the redirect server.
    if user_agent is not None and len(user_agent) > MAX_USER_AGENT:
        user_agent = user_agent[:MAX_USER_AGENT]
    if client_ip is not None and len(client_ip) > MAX_CLIENT_IP:
        client_ip = client_ip[:MAX_CLIENT_IP]
    if referer is not None and len(referer) > MAX_REFERER:
        referer = referer[:MAX_REFERER]
    encoded = _dumps_sanitised(
        (clicked_at_ms, user_agent, client_ip, referer, method, warning_page_served)
        if smart is None
        else (clicked_at_ms, user_agent, client_ip, referer, method, warning_page_served, *smart)
    )
    split = at + 1 + link[at]
    return b"".join(
        (
            _EVENT_START,
            event_id,
            b'","',
            token,
            b'",',
            link[at + 1 : split],
            group[0],
            link[split:],
            group[1],
            memoryview(encoded)[1:],
        )
    )


def _dumps_sanitised(value: tuple[Any, ...]) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(tuple(map(sanitise, value)))


def encode(event_id: str, click: ClickFacts) -> bytes:
    """The message value of one click."""
    return encode_many((event_id,), (click,))[0]


def sanitise(value: Any) -> Any:
    """A string that JSON can carry: lone surrogates (undecodable bytes) become U+FFFD."""
    if type(value) is not str:
        return value
    return _SURROGATE.sub("\ufffd", value)


FIELDS = ClickEvent._fields[:15]  # every event has these; the smart fields may follow
SMART_FIELDS = ClickEvent._fields[15:]
MAX_DESTINATION = 2048  # a target URL's longest
_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_TYPES: dict[str, tuple[type, ...]] = {
    "event_id": _TEXT,
    "token": _TEXT,
    "link_id": (int,),
    "account_id": (int,),
    "target_url": _TEXT,
    "phone_number": _OPTIONAL_TEXT,
    "client_ref": _OPTIONAL_TEXT,
    "client_identifier": _OPTIONAL_TEXT,
    "shortened_at_ms": (int,),
    "clicked_at_ms": (int,),
    "user_agent": _OPTIONAL_TEXT,
    "client_ip": _OPTIONAL_TEXT,
    "referer": _OPTIONAL_TEXT,
    "method": _TEXT,
    "warning_page_served": (bool,),
}


_KINDS = tuple(_TYPES[name] for name in FIELDS)
# Every allowed combination of the fields' exact types (orjson makes only these;
# exact, so a boolean is never taken for an id or a time): checking an event is
# then one set lookup.
_SIGNATURES = frozenset(itertools.product(*_KINDS))
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def decode(value: bytes) -> ClickEvent:
    """Parse and validate one message value; InvalidClickEvent when it is not a click."""
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidClickEvent(f"not JSON: {exc}") from None
    if type(data) is not list or not data:
        raise InvalidClickEvent("not a JSON array")
    if data[0] != VERSION or type(data[0]) is not int:
        raise InvalidClickEvent(f"unsupported version {data[0]!r}")
    fields = data[1 : 1 + len(FIELDS)]
    if len(fields) < len(FIELDS):
        raise InvalidClickEvent(f"{len(data) - 1} fields, expected {len(FIELDS)}")
    if tuple(map(type, fields)) not in _SIGNATURES:
        for name, kinds, field in zip(FIELDS, _KINDS, fields, strict=True):
            if type(field) not in kinds:
                expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise InvalidClickEvent(f"{name} must be {expected}")
    if not _UUID.fullmatch(fields[0]):
        raise InvalidClickEvent("event_id is not a UUID")
    # As PostgreSQL gives it back (lower case): the recorder matches the clicks it
    # inserted to their events by it.
    fields[0] = fields[0].lower()
    event = ClickEvent(*fields)
    smart = data[1 + len(FIELDS) : 1 + len(FIELDS) + len(SMART_FIELDS)]
    if smart and (found := _smart_fields(smart)):
        event = event._replace(**found)
    agent, ip, referer = event.user_agent, event.client_ip, event.referer
    if (
        (agent is not None and len(agent) > MAX_USER_AGENT)
        or (ip is not None and len(ip) > MAX_CLIENT_IP)
        or (referer is not None and len(referer) > MAX_REFERER)
    ):
        # An event published before texts were bounded (a spool, an older release).
        agent, ip, referer = bounded(agent, ip, referer)
        event = event._replace(user_agent=agent, client_ip=ip, referer=referer)
    return event


def _smart_fields(smart: list[Any]) -> dict[str, Any]:
    """The destination, rule_index and variant_index of an event that has them; an
    event whose trailing fields are not of that shape (a later format) has none."""
    if len(smart) != len(SMART_FIELDS):
        return {}
    destination, rule, variant = smart
    if type(destination) is not str or not destination or len(destination) > MAX_DESTINATION:
        return {}
    for index in (rule, variant):
        if index is not None and (type(index) is not int or not 0 <= index < 32):
            return {}
    return {"destination": destination, "rule_index": rule, "variant_index": variant}
