"""SMS encoding, length and segments."""

from __future__ import annotations

import random

from shortlink.api.sms import GSM_BASIC, GSM_EXTENSION, measure


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


def _reference(body: str) -> tuple[str, int, int]:
    """Encoding, units and segments counted character by character."""
    gsm = all(c in GSM_BASIC or c in GSM_EXTENSION for c in body)
    if gsm:
        sizes = [2 if c in GSM_EXTENSION else 1 for c in body]
        single, part = 160, 153
    else:
        sizes = [2 if ord(c) > 0xFFFF else 1 for c in body]
        single, part = 70, 67
    segments, used = 1, 0
    if sum(sizes) > single:
        for size in sizes:
            if used + size > part:
                segments, used = segments + 1, 0
            used += size
    return ("GSM-7" if gsm else "UCS-2"), sum(sizes), segments


def test_fast_counting_matches_character_by_character() -> None:
    """The set-based counting agrees with a per-character count on random bodies."""
    rng = random.Random(7)
    alphabets = ["abc €[", "abc", "abc✓", "ab😀✓", "€", "😀x"]
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        body = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
        got = measure(body)
        assert (got.encoding, got.units, got.segments) == _reference(body), body
        assert got.length == len(body)
