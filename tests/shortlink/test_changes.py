"""Created-link notifications: ids as ranges."""

from __future__ import annotations

from shortlink.changes import created_payload, id_ranges, parse_created


def test_one_unbroken_run_is_one_range() -> None:
    """A bulk insert's ids, in any order, are one range (found without a loop over them)."""
    assert id_ranges(range(1_000, 201_000)) == [(1_000, 200_999)]
    assert id_ranges([5, 3, 4]) == [(3, 5)]
    assert id_ranges([7]) == [(7, 7)]


def test_gaps_and_repeats_make_several_ranges() -> None:
    """Gaps split the ranges; an id given twice counts once; nothing is no range."""
    assert id_ranges([1, 2, 4, 5, 9]) == [(1, 2), (4, 5), (9, 9)]
    assert id_ranges([1, 1, 3]) == [(1, 1), (3, 3)]
    assert id_ranges([2, 2, 3]) == [(2, 3)]
    assert id_ranges([]) == []
    assert parse_created(created_payload(id_ranges([1, 2, 4]))) == [(1, 2), (4, 4)]
