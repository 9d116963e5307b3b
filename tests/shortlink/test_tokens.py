"""Token generation: shape, uniformity, reserved names."""

from __future__ import annotations

import collections
import math

import pytest

from shortlink import tokens


@pytest.mark.parametrize("length", [6, 7, 8])
def test_tokens_have_the_requested_length_and_alphabet(length: int) -> None:
    """Every generated token has the asked length and only base62 characters."""
    batch = tokens.generate(2000, length)
    assert len(batch) == 2000
    assert all(len(t) == length and tokens.is_token(t) for t in batch)


def test_lengths_outside_6_to_8_are_refused() -> None:
    """Asking for a 5- or 9-character token is an error."""
    for length in (5, 9):
        with pytest.raises(ValueError, match=r"6\.\.8"):
            tokens.generate(1, length)


def test_characters_are_uniform() -> None:
    """A chi-square test over 620,000 characters finds no bias between the 62 symbols."""
    chars = "".join(tokens.generate(88_572, 7))
    counts = collections.Counter(chars)
    assert set(counts) == set(tokens.ALPHABET)
    expected = len(chars) / 62
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    # 61 degrees of freedom: the 99.99th percentile is about 113. A modulo bias
    # (bytes 0..255 % 62) would put the first 8 symbols ~25% high: chi2 in the thousands.
    assert chi2 < 113, chi2


def test_reserved_names_are_never_issued(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the random source spells a reserved name, that token is thrown away."""
    real = tokens._random_characters
    calls = iter(["healthz", "readyz1"])

    def rigged(count: int) -> str:
        try:
            return next(calls)
        except StopIteration:
            return real(count)

    monkeypatch.setattr(tokens, "_random_characters", rigged)
    assert tokens.generate(1, 7) == ["readyz1"]


def test_is_token() -> None:
    """Only 6-8 ASCII letters and digits are tokens."""
    assert tokens.is_token("AbC12xY")
    assert tokens.is_token("abcdef")
    assert tokens.is_token("ABCDEFGH")
    for bad in ("abcde", "abcdefghi", "abc-def", "abc def", "abcdé12", "١٢٣٤٥٦٧", ""):
        assert not tokens.is_token(bad), bad


def test_guessing_odds_table_matches_the_alphabet() -> None:
    """The documented token space sizes are 62 to the power of the length."""
    assert [62**n for n in (6, 7, 8)] == [56_800_235_584, 3_521_614_606_208, 218_340_105_584_896]
    assert math.isclose(1_000_000 / 62**7, 2.84e-7, rel_tol=0.01)
