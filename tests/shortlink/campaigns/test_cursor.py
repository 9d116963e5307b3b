"""The one cursor codec of every listing (shortlink.campaigns.cursor)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shortlink.campaigns import clicks, recipients, summaries
from shortlink.campaigns.cursor import CursorForm, from_micros, text, to_micros
from shortlink.exceptions import BadCursor


def test_a_position_comes_back_from_its_cursor() -> None:
    """Encoding then decoding gives the same number and key, times to the microsecond."""
    at = datetime(2026, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)
    event_id = uuid.uuid4()
    cursor = clicks.CURSOR.encode(to_micros(at), event_id.bytes)
    assert cursor == f"{to_micros(at)}-{event_id.hex}"
    micros, key = clicks.CURSOR.decode(cursor)
    assert (from_micros(micros), uuid.UUID(bytes=key)) == (at, event_id)
    name = summaries.CURSOR.decode(summaries.CURSOR.encode(5, "spring ☀".encode()))
    assert name == (5, "spring ☀".encode())


@pytest.mark.parametrize(
    ("form", "cursor"),
    [
        (clicks.CURSOR, "garbage"),
        (clicks.CURSOR, "1-" + "0" * 31),
        (clicks.CURSOR, "1-" + "A" * 32),
        (summaries.CURSOR, "1-abc"),
        (summaries.CURSOR, "-00"),
        (recipients.CURSOR, "1-34"),  # a key that does not start with "+"
        (recipients.CURSOR, ""),
    ],
)
def test_a_cursor_not_of_the_listing_form_is_bad(form: CursorForm, cursor: str) -> None:
    """Anything the listing's pattern does not match is BadCursor, which is a ValueError too."""
    with pytest.raises(BadCursor):
        form.decode(cursor)
    with pytest.raises(ValueError, match="is not a cursor"):
        form.checked(cursor)


def test_a_made_up_key_reads_as_text_that_can_be_queried() -> None:
    """Bytes that are not UTF-8 and NUL become U+FFFD instead of failing the query."""
    assert text(b"ok\x00\xff") == "ok\ufffd\ufffd"
    assert text("名前".encode()) == "名前"


def test_a_page_has_a_next_cursor_only_when_more_rows_came() -> None:
    """Read with LIMIT limit + 1: the extra row means a next page, from the page's last row."""
    form = CursorForm(r"\d+-[0-9a-f]*")
    rows = [(n, bytes([n])) for n in range(1, 5)]
    assert form.page(rows[:3], 3, lambda row: row) == (rows[:3], None)
    page, cursor = form.page(rows, 3, lambda row: row)
    assert (page, cursor) == (rows[:3], "3-03")
    assert form.decode(cursor) == rows[2]
