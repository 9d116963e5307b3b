"""Country calling codes, their possible number lengths and trunk prefixes.

All of it is read once, at import, from the metadata of `phonenumbers` (the
Python port of Google's libphonenumber, updated with every release of it): for
each calling code in use, the lengths a national number can have (libphonenumber's
`possible_length` of every region sharing the code: the length check of its
`is_possible_number`) and the national trunk prefixes ("0" in most countries,
"8" in Russia, "06" in Hungary) that people write in brackets after the code:
"+44 (0)7700 900123". Italy has no trunk prefix, so its leading 0 is a digit of
the number.

From that, `pattern()` builds one regular expression that accepts exactly the
numbers of a possible length, and nothing here runs per number but that
expression (a per-number `phonenumbers.parse` costs about 11 us, eight times the
expression; 200,000 recipients would wait two seconds for it).
"""

from __future__ import annotations

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

# E.164: at most 15 digits with the country code; fewer than 7 reach no phone.
MIN_DIGITS = 7
MAX_DIGITS = 15
_NON_GEOGRAPHIC = "001"  # libphonenumber's region of +800, +882 and the like


def _read() -> tuple[dict[str, tuple[int, ...]], dict[str, frozenset[str]]]:
    lengths: dict[str, tuple[int, ...]] = {}
    trunks: dict[str, frozenset[str]] = {}
    for number, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        code = str(number)
        possible: set[int] = set()
        prefixes: set[str] = set()
        for region in regions:
            metadata = (
                PhoneMetadata.metadata_for_nongeo_region(number)
                if region == _NON_GEOGRAPHIC
                else PhoneMetadata.metadata_for_region(region)
            )
            if metadata is None:  # pragma: no cover - every listed region has metadata
                continue
            if metadata.general_desc is not None:
                possible.update(metadata.general_desc.possible_length or ())
            if metadata.national_prefix:
                prefixes.add(metadata.national_prefix)
        usable = tuple(sorted(n for n in possible if MIN_DIGITS <= len(code) + n <= MAX_DIGITS))
        if usable:
            lengths[code] = usable
            trunks[code] = frozenset(prefixes)
    return lengths, trunks


LENGTHS, TRUNK_PREFIXES = _read()


def calling_code(digits: str) -> str | None:
    """The country calling code `digits` start with (codes are prefix-free), or None."""
    for size in (1, 2, 3):
        if digits[:size] in LENGTHS:
            return digits[:size]
    return None


def is_trunk_prefix(code: str, bracketed: str) -> bool:
    """Whether `bracketed`, written in brackets after +`code`, is its national trunk prefix."""
    return bracketed in TRUNK_PREFIXES.get(code, ())


def _ranges(lengths: tuple[int, ...]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for n in lengths:
        if ranges and ranges[-1][1] == n - 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


def describe_lengths(code: str) -> str:
    """`7, 9 or 10 digits`: the lengths of +`code`'s national numbers, for a message."""
    words = []
    for low, high in _ranges(LENGTHS[code]):
        if high == low:
            words.append(str(low))
        elif high == low + 1:
            words += (str(low), str(high))
        else:
            words.append(f"{low} to {high}")
    said = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
    return f"{said} digits"


def _digits(separator: str, lengths: tuple[int, ...]) -> str:
    one = f"{separator}*[0-9]"
    parts = [
        f"(?:{one}){{{low}}}" if low == high else f"(?:{one}){{{low},{high}}}"
        for low, high in _ranges(lengths)
    ]
    return parts[0] if len(parts) == 1 else f"(?:{'|'.join(parts)})"


def _after_code(separator: str, code: str) -> str:
    """What may follow +`code`: a bracketed trunk prefix or none, then the national digits."""
    rest = _digits(separator, LENGTHS[code])
    if not TRUNK_PREFIXES[code]:
        return rest
    trunk = f"{separator}*\\((?:{'|'.join(sorted(TRUNK_PREFIXES[code]))})\\)"
    # A bracketed trunk prefix is always one ("(0)" is never a digit of the number).
    return f"(?:{trunk}|(?!{trunk})){rest}"


def _trie(separator: str, prefix: str, codes: list[str]) -> str:
    """The codes below `prefix` as nested alternatives, one branch per next digit: the
    expression rejects a wrong first digit at once instead of trying every code."""
    if codes == [prefix]:
        return _after_code(separator, prefix)
    branches: dict[str, list[str]] = {}
    for digit in sorted({code[len(prefix)] for code in codes}):
        below = [code for code in codes if code[len(prefix)] == digit]
        branches.setdefault(_trie(separator, prefix + digit, below), []).append(digit)
    alternatives = [
        (digits[0] if len(digits) == 1 else f"[{''.join(digits)}]") + tail
        for tail, digits in branches.items()
    ]
    return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"


def pattern(separator: str) -> str:
    """A regular expression for an international number of a possible length, with
    `separator` (a character class) allowed anywhere between the digits."""
    return (
        f"^{separator}*(?:\\+|00)?{separator}*{_trie(separator, '', sorted(LENGTHS))}{separator}*$"
    )
