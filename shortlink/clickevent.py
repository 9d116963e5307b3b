"""The click event: the one wire format between the redirect server and the forwarder.

The redirect server publishes one event per recorded click to the click topic,
keyed by token, as an orjson-encoded JSON object:

    {"v": 1,                          format version
     "event_id": "0190c5a2-...",      UUIDv7, unique per click; the forwarder dedups on it
     "token": "AbC12xY", "link_id": 716005, "account_id": 1,
     "target_url": "https://...", "phone_number": "447700900000" | null,
     "client_ref": "msg-1" | null, "client_identifier": "campaign" | null,
     "shortened_at_ms": 1382000166965,  link creation (ShortenDate), ms since the epoch, UTC
     "clicked_at_ms": 1382000769338,    the click, ms since the epoch, UTC
     "user_agent": "..." | null, "client_ip": "203.0.113.9" | null, "referer": "..." | null,
     "method": "GET" | "HEAD", "warning_page_served": false}

Only raw facts travel: parsing user agents, bot detection and counting belong to
the forwarder. Both services import this module; nothing else defines the format.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from shortlink.links import LinkEntry

VERSION = 1


class InvalidClickEvent(ValueError):
    """A message on the click topic that is not a click event this code understands."""


@dataclass(frozen=True, slots=True)
class ClickEvent:
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


class EventIds:
    """UUIDv7 event ids, cheap enough to make one per click.

    48 bits of millisecond time, then 42 random bits fixed for this process and a
    32-bit counter (starting at a random value): unique within the process by the
    counter, across processes by the random bits. Time-ordered ids also keep the
    forwarder's primary-key index compact.
    """

    def __init__(self) -> None:
        random_bits = int.from_bytes(os.urandom(8), "big")
        rand_a = random_bits >> 52  # 12 bits
        rand_b = random_bits & ((1 << 30) - 1)  # 30 bits
        self._fixed = (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | (rand_b << 32)
        self._counter = int.from_bytes(os.urandom(4), "big")

    def next(self, clicked_at_ms: int) -> str:
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        h = f"{(clicked_at_ms << 80) | self._fixed | self._counter:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode(
    event_id: str,
    link: LinkEntry,
    clicked_at_ms: int,
    user_agent: str | None,
    client_ip: str | None,
    referer: str | None,
    method: str,
    warning_page_served: bool,
) -> bytes:
    """The message value of one click."""
    return orjson.dumps(
        {
            "v": VERSION,
            "event_id": event_id,
            "token": link.token,
            "link_id": link.id,
            "account_id": link.account_id,
            "target_url": link.target_url,
            "phone_number": link.phone_number,
            "client_ref": link.client_ref,
            "client_identifier": link.client_identifier,
            "shortened_at_ms": link.created_at_ms,
            "clicked_at_ms": clicked_at_ms,
            "user_agent": user_agent,
            "client_ip": client_ip,
            "referer": referer,
            "method": method,
            "warning_page_served": warning_page_served,
        }
    )


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "event_id": str,
    "token": str,
    "link_id": int,
    "account_id": int,
    "target_url": str,
    "shortened_at_ms": int,
    "clicked_at_ms": int,
    "method": str,
    "warning_page_served": bool,
}
_OPTIONAL_TEXT = (
    "phone_number",
    "client_ref",
    "client_identifier",
    "user_agent",
    "client_ip",
    "referer",
)


def decode(value: bytes) -> ClickEvent:
    """Parse and validate one message value; InvalidClickEvent when it is not a click."""
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidClickEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidClickEvent("not a JSON object")
    if data.get("v") != VERSION:
        raise InvalidClickEvent(f"unsupported version {data.get('v')!r}")
    for name, kind in _REQUIRED.items():
        field = data.get(name)
        # bool is an int subclass: a boolean is never a valid id or time.
        if not isinstance(field, kind) or (kind is int and isinstance(field, bool)):
            raise InvalidClickEvent(f"{name} is missing or not {getattr(kind, '__name__', kind)}")
    for name in _OPTIONAL_TEXT:
        if not isinstance(data.get(name), str | None):
            raise InvalidClickEvent(f"{name} must be a string or null")
    try:
        uuid.UUID(data["event_id"])
    except ValueError:
        raise InvalidClickEvent("event_id is not a UUID") from None
    return ClickEvent(
        event_id=data["event_id"],
        token=data["token"],
        link_id=data["link_id"],
        account_id=data["account_id"],
        target_url=data["target_url"],
        phone_number=data.get("phone_number"),
        client_ref=data.get("client_ref"),
        client_identifier=data.get("client_identifier"),
        shortened_at_ms=data["shortened_at_ms"],
        clicked_at_ms=data["clicked_at_ms"],
        user_agent=data.get("user_agent"),
        client_ip=data.get("client_ip"),
        referer=data.get("referer"),
        method=data["method"],
        warning_page_served=data["warning_page_served"],
    )
