"""One cursor codec for every paginated listing: `<number>-<key in hex>`.

A cursor is the keyset position of the last item of a page: a number (a time in
microseconds since 1970, or a link id) and a key (an event id's 16 bytes, a
campaign's name or a phone number in UTF-8), written as the number in decimal, a
dash and the key in lower-case hex. Each listing states the cursors it reads as a
pattern (the one the OpenAPI document gives for the public ones): every cursor
that matches it is a position, however it was made, and anything else is
BadCursor, never a failed query.

    listing                         number                key
    GET /v1/campaigns/{c}/clicks    clicked_at (µs)       event id (16 bytes)
    GET /v1/campaigns, dashboard    campaign created_at   campaign name (UTF-8)
    dashboard recipients            link id               phone number (empty: none)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from shortlink.exceptions import BadCursor

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_Row = TypeVar("_Row")


class CursorForm:
    """The cursors one listing makes and reads, by their pattern."""

    __slots__ = ("_regex", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._regex = re.compile(pattern)

    def encode(self, number: int, key: bytes) -> str:
        """The cursor of the position (number, key)."""
        return f"{number}-{key.hex()}"

    def decode(self, cursor: str) -> tuple[int, bytes]:
        """The (number, key) a cursor holds, or BadCursor."""
        if self._regex.fullmatch(cursor) is None:
            raise BadCursor("is not a cursor this API returned (next_cursor)")
        number, _, key = cursor.partition("-")
        return int(number), bytes.fromhex(key)

    def page(
        self,
        rows: Sequence[_Row],
        limit: int,
        position: Callable[[_Row], tuple[int, bytes]],
    ) -> tuple[Sequence[_Row], str | None]:
        """The page in `rows` (read with LIMIT limit + 1) and the next page's cursor: the
        position of its last row when there are more, else None."""
        if len(rows) <= limit:
            return rows, None
        return rows[:limit], self.encode(*position(rows[limit - 1]))

    def checked(self, cursor: str) -> str:
        """`cursor` if this listing can read it, or BadCursor (a ValueError, for Fields)."""
        self.decode(cursor)
        return cursor


def to_micros(at: datetime) -> int:
    """A time as the microseconds since 1970 a cursor holds."""
    return (at - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """The time a cursor's microseconds stand for."""
    return _EPOCH + value * _MICROSECOND


def text(key: bytes) -> str:
    """A cursor's key as text that can be queried: bytes that are not UTF-8 and NUL become
    U+FFFD, so a made-up key simply matches nothing."""
    return key.decode("utf-8", "replace").replace("\x00", "\ufffd")
