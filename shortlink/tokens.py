"""Short-link tokens: random, uniform base62 strings of 6 to 8 characters.

Tokens come from the operating system's CSPRNG (`os.urandom`). Each random byte
below 248 (= 4 x 62) maps to `ALPHABET[byte % 62]`; bytes 248..255 are thrown
away, so every character is exactly uniform (rejection sampling, no modulo bias).
Uniqueness is the database's job: links.token is UNIQUE and writers retry with
fresh tokens on a conflict, never read-then-write.

The first character of a token is its period's tag (shortlink.partitions), so a
lookup probes one partition; the other L - 1 characters are random. Guessing odds
(docs/tokens.md has the table): with N live links of length L made over P weeks, a
guess that picks one of the P live tags hits a link with probability
N / (P * 62**(L - 1)).
"""

from __future__ import annotations

import os

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MIN_LENGTH = 6
MAX_LENGTH = 8
DEFAULT_LENGTH = 7

# Names the servers answer themselves. Every one that is also a well-formed token
# must never be issued; the rest are listed so the intent is in one place.
RESERVED = frozenset(
    {
        "healthz",
        "readyz",
        "livez",
        "metrics",
        "robots",
        "favicon",
        "openapi",
        "static",
        "assets",
        "admin",
        "status",
        "health",
        "ready",
    }
)

_ACCEPTED = 248  # the largest multiple of 62 that fits in a byte
# bytes.translate table: byte b < 248 -> ALPHABET[b % 62]; bytes >= 248 are deleted.
_TABLE = bytes(ord(ALPHABET[b % 62]) for b in range(_ACCEPTED)) + bytes(256 - _ACCEPTED)
_REJECTED = bytes(range(_ACCEPTED, 256))


def is_token(candidate: str) -> bool:
    """Whether `candidate` is shaped like a token (6-8 ASCII letters or digits)."""
    return (
        MIN_LENGTH <= len(candidate) <= MAX_LENGTH and candidate.isascii() and candidate.isalnum()
    )


def _random_characters(count: int) -> str:
    out = bytearray()
    while len(out) < count:
        # 248/256 of the bytes survive; ask for a little more than needed.
        out += os.urandom(count + count // 16 + 8).translate(_TABLE, _REJECTED)
    return out[:count].decode("ascii")


def generate(count: int, length: int = DEFAULT_LENGTH, tag: str = "") -> list[str]:
    """`count` fresh tokens of `length` characters, none of them reserved: `tag` (the
    period's character, shortlink.partitions.tag), then random characters.

    Duplicates inside the batch are possible (the database rejects them; callers
    retry those), but astronomically rare at realistic sizes.
    """
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"token length must be {MIN_LENGTH}..{MAX_LENGTH}, got {length}")
    if len(tag) > 1 or tag not in ALPHABET:
        raise ValueError(f"a token's tag is one character of the alphabet, got {tag!r}")
    size = length - len(tag)
    tokens: list[str] = []
    while len(tokens) < count:
        missing = count - len(tokens)
        chars = _random_characters(missing * size)
        tokens.extend(
            token
            for token in (tag + chars[i : i + size] for i in range(0, len(chars), size))
            if token not in RESERVED
        )
    return tokens
