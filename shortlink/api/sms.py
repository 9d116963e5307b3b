"""How a message body travels as SMS: encoding, length and number of segments.

A body that uses only the GSM 03.38 alphabet (with its extension table, whose
characters take two septets) is sent as GSM-7: 160 septets in one SMS, 153 per
segment when concatenated. Anything else makes it UCS-2: 70 UTF-16 units in one
SMS, 67 per segment. A segment never splits an escape pair or a surrogate pair.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Sms:
    encoding: str  # "GSM-7" or "UCS-2"
    length: int  # characters
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


GSM_ALL = GSM_BASIC | GSM_EXTENSION


def measure(body: str) -> Sms:
    """Encoding, length and segment count of `body`."""
    # Work on the set of distinct characters: a message has few, and this runs
    # once per recipient of a 100,000-recipient request.
    chars = set(body)
    if chars <= GSM_ALL:
        escaped = chars & GSM_EXTENSION
        units = len(body) + sum(body.count(c) for c in escaped)
        if units <= 160:
            return Sms("GSM-7", len(body), units, 1)
        if not escaped:
            return Sms("GSM-7", len(body), units, -(-units // 153))
        sizes = [2 if c in GSM_EXTENSION else 1 for c in body]
        return Sms("GSM-7", len(body), units, _segments(sizes, 160, 153))
    astral = [c for c in chars if ord(c) > 0xFFFF]
    units = len(body) + sum(body.count(c) for c in astral)
    if units <= 70:
        return Sms("UCS-2", len(body), units, 1)
    if not astral:
        return Sms("UCS-2", len(body), units, -(-units // 67))
    sizes = [2 if ord(c) > 0xFFFF else 1 for c in body]
    return Sms("UCS-2", len(body), units, _segments(sizes, 70, 67))


def _segments(sizes: list[int], single: int, part: int) -> int:
    total = sum(sizes)
    if total <= single:
        return 1
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:  # the pair does not fit: it starts the next segment
            segments += 1
            used = 0
        used += size
    return segments
