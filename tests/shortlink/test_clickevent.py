"""The click event wire format."""

from __future__ import annotations

import uuid

import orjson
import pytest

from shortlink import clickevent
from shortlink.links import LinkEntry

LINK = LinkEntry(
    716005,
    "AbC12xY",
    1,
    "https://dotdigital.com/",
    "447700900000",
    None,
    "Campaign",
    1382000166965,
    4e9,
    False,
    False,
)


def encoded(**changes: object) -> bytes:
    data = orjson.loads(
        clickevent.encode(
            str(uuid.uuid4()),
            clickevent.facts(LINK, 1382000769.338, "UA", "127.0.0.1", None, "GET", False),
        )
    )
    for name, value in changes.items():
        if name == "v":
            data[0] = value
        else:
            data[1 + clickevent.FIELDS.index(name)] = value
    return orjson.dumps(data)


def test_round_trip_keeps_every_field() -> None:
    """encode then decode gives back every value, nulls included."""
    [event_id] = clickevent.EventIds().take(1, 1382000769338)
    event = clickevent.decode(
        clickevent.encode(
            event_id,
            clickevent.facts(LINK, 1382000769.338, "UA", "10.0.0.1", "ref", "HEAD", True),
        )
    )
    assert event == clickevent.ClickEvent(
        event_id=event_id,
        token="AbC12xY",
        link_id=716005,
        account_id=1,
        target_url="https://dotdigital.com/",
        phone_number="447700900000",
        client_ref=None,
        client_identifier="Campaign",
        shortened_at_ms=1382000166965,
        clicked_at_ms=1382000769338,
        user_agent="UA",
        client_ip="10.0.0.1",
        referer="ref",
        method="HEAD",
        warning_page_served=True,
    )


def test_fields_added_later_are_ignored() -> None:
    """A newer producer's extra trailing fields do not stop this reader."""
    data = orjson.loads(encoded())
    assert clickevent.decode(orjson.dumps([*data, "new field"])).token == "AbC12xY"


def test_event_ids_are_unique_uuid7_and_time_ordered() -> None:
    """Ids are valid version-7 UUIDs carrying the time, distinct, and sort by time."""
    ids = clickevent.EventIds()
    made = [i for ms in range(100) for i in ids.take(100, 1_700_000_000_000 + ms)]
    assert len(set(made)) == 10_000
    parsed = [uuid.UUID(i) for i in made]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert parsed[0].int >> 80 == 1_700_000_000_000
    assert made[0] < made[-1]
    assert not set(clickevent.EventIds().take(100, 1_700_000_000_000)) & set(made)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"v": 1}', "not a JSON array"),
        (b"[1, 2]", "fields, expected"),
        (encoded(v=2), "unsupported version"),
        (encoded(v=True), "unsupported version"),
        (encoded(link_id="7"), "link_id"),
        (encoded(link_id=True), "link_id"),
        (encoded(event_id="nope"), "not a UUID"),
        (encoded(user_agent=5), "user_agent"),
        (encoded(warning_page_served="no"), "warning_page_served"),
    ],
)
def test_invalid_messages_are_rejected(value: bytes, reason: str) -> None:
    """Anything that is not a valid version-1 click event raises InvalidClickEvent."""
    with pytest.raises(clickevent.InvalidClickEvent, match=reason):
        clickevent.decode(value)


def test_undecodable_header_bytes_become_replacement_characters() -> None:
    """A header aiohttp decoded with surrogate escapes is encoded with U+FFFD, never raising."""
    [event_id] = clickevent.EventIds().take(1, 1382000769338)
    bad = b"Mozilla/5.0 \xff\xfe".decode("utf-8", "surrogateescape")
    [value] = clickevent.encode_many(
        [event_id], [clickevent.facts(LINK, 1382000769.338, bad, None, bad, "GET", False)]
    )
    event = clickevent.decode(value)
    assert event.user_agent == event.referer == "Mozilla/5.0 \ufffd\ufffd"
    assert event.event_id == event_id
