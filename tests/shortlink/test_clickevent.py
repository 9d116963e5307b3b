"""The click event wire format."""

from __future__ import annotations

import uuid

import orjson
import pytest

from shortlink import clickevent
from shortlink.exceptions import InvalidClickEvent
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
    with pytest.raises(InvalidClickEvent, match=reason):
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


BAD = b"Mozilla/5.0 \xff\xfe".decode("utf-8", "surrogateescape")
ASSEMBLED = [
    (LINK, ("UA", "203.0.113.9", None, "GET", False)),
    (
        LinkEntry(
            9_007_199_254_740_993,
            "Zz9",
            2**40,
            'https://例え.jp/"quoted"\\back?q=ü&x=\u2028',
            None,
            'ref "1" \\ \n\t',
            None,
            0,
            4e9,
            True,
            False,
        ),
        (BAD, "::1", "https://ref.example/\x00\x7f", "HEAD", True),
    ),
    (
        LinkEntry(1, "AAAAAAAA", 1, "https://e.x/", "", "", "", 1, 4e9, False, False),
        (None, None, BAD, "GET", False),
    ),
    (LINK, ("U" * 9000, "1" * 300, "https://r.example/" + "r" * 9000, "GET", False)),
]


@pytest.mark.parametrize(("link", "click"), ASSEMBLED)
def test_an_event_assembled_from_parts_is_the_bytes_encode_makes(
    link: LinkEntry, click: tuple[str | None, str | None, str | None, str, bool]
) -> None:
    """assemble(), from the group's and the link's fields encoded ahead, gives exactly the
    bytes of encode() for the same click: escapes, non-ASCII, nulls, undecodable headers."""
    ids = clickevent.EventIds()
    [as_bytes] = ids.take_bytes(1, 1382000769338)
    group = clickevent.group_fields(
        link.account_id, link.target_url, link.client_identifier, link.created_at_ms
    )
    own = b"\x00\x01\x02" + clickevent.link_fields(link.id, link.phone_number, link.client_ref)
    assert clickevent.read_link_fields(own, 3) == (link.id, link.phone_number, link.client_ref)
    value = clickevent.assemble(as_bytes, link.token.encode(), own, 3, group, 1382000769338, *click)
    facts = clickevent.facts(link, 1382000769.338, *click)
    assert value == clickevent.encode(as_bytes.decode(), facts)
    assert clickevent.decode(value).token == link.token


@pytest.mark.parametrize("link_id", [0, 7, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1])
def test_a_links_fields_hold_its_id_digits_and_its_texts_as_json(link_id: int) -> None:
    """link_fields: a length byte, the id's digits as encode() writes them, then phone and
    client_ref as JSON (undecodable text as U+FFFD), read back by read_link_fields."""
    digits = orjson.dumps(link_id)
    fields = clickevent.link_fields(link_id, "+447700900123", BAD)
    texts = ("+447700900123", "Mozilla/5.0 \ufffd\ufffd")
    assert fields == bytes((len(digits),)) + digits + b"," + orjson.dumps(texts)[1:-1]
    assert clickevent.read_link_fields(fields) == (link_id, *texts)


def test_a_link_id_beyond_64_bits_is_refused() -> None:
    """An id orjson cannot write as an integer is refused, not written as something else."""
    with pytest.raises(orjson.JSONEncodeError):
        clickevent.link_fields(2**64, None, None)


def test_ids_as_bytes_follow_the_same_counter_as_ids_as_text() -> None:
    """take_bytes() continues the counter of take(): the same ids, in ASCII, none twice."""
    ids = clickevent.EventIds()
    ids._counter = 0xFFFFFFFF - 2  # the 32-bit counter wraps inside this batch
    text = ids.take(2, 1_700_000_000_000)
    made = [i.decode() for i in ids.take_bytes(70_000, 1_700_000_000_000)]
    assert [uuid.UUID(i).version for i in made[:3]] == [7, 7, 7]
    assert made[0][:-8] == text[0][:-8]
    assert int(made[0][-8:], 16) == (int(text[-1][-8:], 16) + 1) & 0xFFFFFFFF
    assert len(set(text + made)) == len(text) + len(made)
    assert [int(i[-8:], 16) for i in made[:3]] == [0, 1, 2]


def test_ids_made_one_at_a_time_are_the_ids_of_a_batch() -> None:
    """next_bytes() makes, click by click, the ids take_bytes() makes for the same counter
    and millisecond, and a new time prefix when the millisecond changes."""
    ids = clickevent.EventIds()
    ids._counter = 0xFFFFFFFF - 1  # wraps on the second id
    batch = ids.take_bytes(3, 1_700_000_000_000)
    ids._counter = 0xFFFFFFFF - 1
    one_by_one = [ids.next_bytes(1_700_000_000_000) for _ in range(3)]
    assert one_by_one == batch
    later = ids.next_bytes(1_700_000_000_001).decode()
    assert uuid.UUID(later).version == 7
    assert (later[:13], later[-8:]) == ("018bcfe5-6801", "00000002")


def test_texts_a_client_sent_are_cut_to_their_maximum_length() -> None:
    """User agent, client IP and Referer longer than their maximums are cut when the event
    is made, and again when one made before the limits is read; the click is kept."""
    agent, ip, referer = "\u00e9" * 5000, "f" * 500, "https://r.example/" + "x" * 9000
    facts = clickevent.facts(LINK, 1382000769.338, agent, ip, referer, "GET", False)
    event = clickevent.decode(clickevent.encode(str(uuid.uuid4()), facts))
    assert event.user_agent == agent[: clickevent.MAX_USER_AGENT]
    assert event.client_ip == ip[: clickevent.MAX_CLIENT_IP]
    assert event.referer == referer[: clickevent.MAX_REFERER]
    older = encoded(user_agent=agent, client_ip=ip, referer=referer)
    assert clickevent.decode(older)[10:13] == (event.user_agent, event.client_ip, event.referer)
