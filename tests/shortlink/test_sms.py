"""SMS encoding, length and segments."""

from __future__ import annotations

from shortlink.sms import measure


def test_gsm7_single_and_concatenated() -> None:
    """160 GSM-7 septets fit one SMS; 161 need two segments of up to 153."""
    assert measure("a" * 160) == measure("a" * 160)
    one = measure("a" * 160)
    assert (one.encoding, one.length, one.segments) == ("GSM-7", 160, 1)
    assert measure("a" * 161).segments == 2
    assert measure("a" * 306).segments == 2
    assert measure("a" * 307).segments == 3


def test_extension_characters_take_two_septets_and_are_not_split() -> None:
    """€, [, ] count twice; a segment never splits an escape pair."""
    euro = measure("€" * 80)
    assert (euro.encoding, euro.length, euro.units, euro.segments) == ("GSM-7", 80, 160, 1)
    assert measure("€" * 81).segments == 2
    # 152 septets then a two-septet character: it moves whole to the second segment.
    assert measure("a" * 152 + "€" + "a" * 153).segments == 3


def test_ucs2_when_any_character_is_outside_gsm() -> None:
    """One character outside GSM-7 makes the whole message UCS-2 (70 / 67 per segment)."""
    assert measure("Привет").encoding == "UCS-2"
    assert measure("a" * 70 + "").segments == 1
    assert measure("ä" * 70).encoding == "GSM-7"  # ä is in the GSM alphabet
    assert measure("✓" * 70).segments == 1
    assert measure("✓" * 71).segments == 2
    emoji = measure("😀" * 35)
    assert (emoji.length, emoji.units, emoji.segments) == (35, 70, 1)
    assert measure("😀" * 36).segments == 2
