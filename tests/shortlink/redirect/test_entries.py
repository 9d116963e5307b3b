"""Links as a redirect worker keeps them: interned link groups by slot, and packed links."""

from __future__ import annotations

import pytest

from shortlink import clickevent
from shortlink.redirect import entries
from shortlink.redirect.entries import (
    GroupKey,
    Groups,
    LinkGroup,
    group_index,
    packed_prefix,
    unpack,
)


def key(campaign: str | None = "spring", **changes: object) -> GroupKey:
    """The fields of a link group, `campaign` as its client_identifier."""
    fields: dict[str, object] = {
        "account_id": 7,
        "target_url": "https://example.com/spring",
        "created_at_ms": 1_700_000_000_000,
        "expires_at": 4e9,
        "unsafe": False,
        "disabled": False,
        **changes,
    }
    return (
        fields["account_id"],
        fields["target_url"],
        campaign,
        fields["created_at_ms"],
        fields["expires_at"],
        fields["unsafe"],
        fields["disabled"],
        fields.get("expired_url"),
    )  # type: ignore[return-value]


def test_links_with_the_same_fields_share_one_group() -> None:
    """acquire interns: equal fields give the same slot and group, other fields another."""
    groups = Groups()
    first = groups.acquire(key())
    assert groups.acquire(key()) == first
    other = groups.acquire(key(target_url="https://example.com/autumn"))
    assert other != first
    assert len(groups) == 2
    group = groups.items[first]
    assert group is not None
    assert (group.account_id, group.target_url, group.client_identifier) == (
        7,
        "https://example.com/spring",
        "spring",
    )


def test_a_group_lives_as_long_as_its_last_link_and_its_slot_is_reused() -> None:
    """Each acquire and retain counts a link; the last release frees the slot, taken again
    by the next new group."""
    groups = Groups()
    index = groups.acquire(key())
    groups.retain(index)
    groups.release(index)
    assert groups.items[index] is not None
    groups.release(index)
    assert groups.items[index] is None
    assert len(groups) == 0
    again = groups.acquire(key("autumn"))
    assert again == index
    assert len(groups.items) == 1


def test_clear_forgets_every_group_in_place() -> None:
    """clear empties the very list the hit path holds on to."""
    groups = Groups()
    items = groups.items
    groups.acquire(key())
    groups.clear()
    assert groups.items is items
    assert (items, len(groups)) == ([], 0)
    assert groups.acquire(key()) == 0


def test_groups_share_one_client_identifier_string() -> None:
    """Groups with the same client_identifier (read as a new string per row) keep one string,
    until the last of them is freed."""
    groups = Groups()
    indexes = [
        groups.acquire(key("".join(["spr", "ing"]), target_url=f"https://example.com/{i}"))
        for i in range(3)
    ]
    found = [groups.items[i] for i in indexes]
    assert len({id(group.client_identifier) for group in found if group}) == 1
    for index in indexes:
        groups.release(index)
    assert groups._texts == {}  # the last group using it let it go


def test_more_groups_than_a_slot_index_holds_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slot index is 3 bytes: past MAX_GROUPS groups, acquire raises OverflowError."""
    monkeypatch.setattr(entries, "MAX_GROUPS", 2)
    groups = Groups()
    groups.acquire(key("a"))
    groups.acquire(key("b"))
    with pytest.raises(OverflowError):
        groups.acquire(key("c"))


def test_a_groups_header_and_event_bytes_are_kept_from_its_second_tap() -> None:
    """A group tapped once keeps no Location or event bytes (most links of a client that
    makes one link per request are tapped once); from the second tap both are kept, and
    every tap gets the same bytes."""
    group = LinkGroup(*key("solo", target_url="https://example.com/solo"))
    taps = []
    for _ in range(3):
        taps.append((group.location_bytes(), group.encoded_fields()))
        if len(taps) == 1:
            assert (group.location, group.event_fields) == (None, None)
    assert taps[0] == taps[1] == taps[2]
    assert taps[0][0] == b"https://example.com/solo"
    assert group.location is taps[2][0]  # kept
    assert group.event_fields is taps[2][1]
    assert taps[0][1] == clickevent.group_fields(
        7, "https://example.com/solo", "solo", 1_700_000_000_000
    )


def test_a_location_aiohttp_would_refuse_keeps_its_own_path() -> None:
    """A target with a control character has no Location bytes of ours (b"": aiohttp's path)."""
    group = LinkGroup(*key(target_url="https://example.com/a\x01b"))
    assert group.location_bytes() == b""


@pytest.mark.parametrize(
    ("unsafe", "disabled", "special"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_an_unsafe_or_disabled_group_is_special(
    unsafe: bool, disabled: bool, special: bool
) -> None:
    """Either flag tells the hit path to look closer; the flag is not part of equality."""
    group = LinkGroup(*key(unsafe=unsafe, disabled=disabled))
    assert group.special is special
    assert group == LinkGroup(*key(unsafe=unsafe, disabled=disabled))


@pytest.mark.parametrize("index", [0, 1, 255, 256, 65_536, entries.MAX_GROUPS - 1])
def test_a_packed_link_gives_back_its_slot_and_fields(index: int) -> None:
    """A packed link is its group's 3-byte slot index, then the link's event fields."""
    packed = packed_prefix(index) + clickevent.link_fields(716005, "447700900000", "m1")
    assert group_index(packed) == index
    assert unpack(packed) == (716005, "447700900000", "m1")
    assert unpack(packed_prefix(index) + clickevent.link_fields(3, None, None)) == (3, None, None)
