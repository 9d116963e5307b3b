"""What a conversion may hold, checked before anything is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import iso4217
import orjson
import pytest

from shortlink import conversions
from shortlink.api.app import openapi_document
from shortlink.exceptions import InvalidInput

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_currencies_are_the_published_iso_4217_list_and_the_documents() -> None:
    """The accepted codes are the iso4217 package's, which the OpenAPI document lists."""
    assert set(conversions.CURRENCIES) == {c.code for c in iso4217.Currency}
    assert {"EUR", "USD", "JPY", "XCG", "ZWG"} <= set(conversions.CURRENCIES)
    schema = orjson.loads(openapi_document())["components"]["schemas"]["CreateConversion"]
    fields = schema["properties"]
    assert fields["currency"]["enum"] == [*conversions.CURRENCIES, None]
    assert fields["value"]["maximum"] == conversions.MAX_VALUE
    assert fields["event"]["maxLength"] == conversions.MAX_EVENT
    assert fields["event"]["not"] == {"const": conversions.LINK_CLICK}
    assert fields["disposition"]["enum"] == list(conversions.DISPOSITIONS)
    for code in ("eur", "EURO", "ABC", "ZWL"):  # ZWL was withdrawn
        with pytest.raises(InvalidInput):
            conversions.currency(code)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-05-01T09:30:00Z", datetime(2026, 5, 1, 9, 30, tzinfo=UTC)),
        ("2026-05-01T11:30:00+02:00", datetime(2026, 5, 1, 9, 30, tzinfo=UTC)),
        ("2026-05-01T09:30:00.123456789-00:30", datetime(2026, 5, 1, 10, 0, 0, 123456, UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1970-01-01T00:00:00+14:00", datetime(1969, 12, 31, 10, tzinfo=UTC)),  # 1970 as written
        ("2026-05-02T11:59:59Z", datetime(2026, 5, 2, 11, 59, 59, tzinfo=UTC)),
    ],
)
def test_occurred_at_reads_rfc_3339_with_its_offset(text: str, utc: datetime) -> None:
    """Z or a numeric offset, any fraction of a second, up to a day ahead."""
    assert conversions.occurred_at(text, now=NOW) == utc


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-01T09:30:00",  # no offset
        "2026-05-01 09:30:00Z",  # ISO 8601 allows it, RFC 3339's date-time does not
        "2026-05-01",
        "20260501T093000Z",
        "2026-02-30T00:00:00Z",
        "2026-05-01T24:00:00Z",
        "2026-05-01T09:30:00+24:00",
        "２０２６-05-01T09:30:00Z",  # full-width digits
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59-01:00",  # 1970 in UTC, 1969 as written
        "0001-01-01T00:00:00+01:00",
        "2026-05-02T12:00:01Z",  # more than a day ahead
    ],
)
def test_occurred_at_refuses_anything_else(text: str) -> None:
    """Times without an offset, other ISO 8601 forms, impossible dates, out of the window."""
    with pytest.raises(InvalidInput):
        conversions.occurred_at(text, now=NOW)


def test_events_and_metadata() -> None:
    """Events are 1-64 characters, not link_click; metadata <= 4 KiB, nested <= 32 levels."""
    assert conversions.event_name("x" * 64) == "x" * 64
    for bad in ("", "x" * 65, "link_click"):
        with pytest.raises(InvalidInput):
            conversions.event_name(bad)
    assert conversions.metadata({"a": [1, None]}) == '{"a":[1,null]}'
    assert len(conversions.metadata({"k": "v" * 4088})) == 4096
    deep: dict[str, object] = {"leaf": [[1]]}  # levels 31 and 32 (the object is level 1)
    for _ in range(29):
        deep = {"a": deep}
    assert conversions.metadata(deep).startswith('{"a":')
    for bad_metadata in ({"k": "v" * 4089}, [1], "x", {"a": deep}, {"b": [deep]}):
        with pytest.raises(InvalidInput):
            conversions.metadata(bad_metadata)


def test_seconds_since_first_click() -> None:
    """Counted from the first tap; null for a link never tapped; negative before it."""
    tap = NOW - timedelta(minutes=1)
    assert conversions.seconds_since_first_click(NOW, tap) == 60.0
    assert conversions.seconds_since_first_click(tap, NOW) == -60.0
    assert conversions.seconds_since_first_click(NOW, None) is None
