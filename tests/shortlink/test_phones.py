"""Calling codes and possible lengths, read once from phonenumbers' metadata."""

from __future__ import annotations

import re

import phonenumbers
import pytest

from shortlink import phones, validation
from shortlink.exceptions import InvalidInput


@pytest.mark.parametrize(
    "number",
    [
        "+447700900123",
        "+4477009001234",
        "+441234567",
        "+14155550100",
        "+1415555010",
        "+919812345678",
        "+4930123456",
        "+33612345678",
        "+3361234567",
        "+8613812345678",
        "+290 1234",
        "+68312345",
        "+88213123456789",
        "+998901234567",
    ],
)
def test_lengths_agree_with_libphonenumber(number: str) -> None:
    """A number of a length the table allows is one libphonenumber calls possible, and back."""
    parsed = phonenumbers.parse(number)
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    digits = number.lstrip("+").replace(" ", "")
    try:
        validation.phone_number(number)
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == (reason == phonenumbers.ValidationResult.IS_POSSIBLE), (digits, reason)


def test_every_code_in_use_is_known() -> None:
    """The codes are libphonenumber's (215 or so), and codes no one uses are not among them."""
    assert len(phones.LENGTHS) > 200
    assert {"1", "7", "44", "91", "290", "882"} <= set(phones.LENGTHS)
    assert not {"0", "999", "42", "210"} & set(phones.LENGTHS)
    assert phones.calling_code("447700900123") == "44"
    assert phones.calling_code("999123") is None


def test_trunk_prefixes_come_from_the_metadata() -> None:
    """0 in most countries, 8 in Russia, none in Italy (its 0 is a digit of the number)."""
    assert phones.is_trunk_prefix("44", "0")
    assert phones.is_trunk_prefix("7", "8")
    assert not phones.is_trunk_prefix("39", "0")
    assert not phones.is_trunk_prefix("44", "1")


def test_the_pattern_accepts_exactly_the_possible_lengths() -> None:
    """For each code, the document's pattern accepts its lengths and no other (7 to 15 in all)."""
    rx = re.compile(validation.PHONE_PATTERN)
    for code, lengths in phones.LENGTHS.items():
        for national in range(1, 16 - len(code)):
            number = "+" + code + "5" * national
            assert (rx.fullmatch(number) is not None) == (national in lengths), number


def test_lengths_are_described_for_people() -> None:
    """Ranges and single lengths read naturally in an error message."""
    assert phones.describe_lengths("44") == "7, 9 or 10 digits"
    assert phones.describe_lengths("1") == "7 or 10 digits"
    assert phones.describe_lengths("91") == "8 to 13 digits"
