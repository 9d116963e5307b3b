"""docs/benchmarks.md keeps the current report of each benchmark command, not a history."""

from __future__ import annotations

from pathlib import Path

from loadtests.results import HEADER, replace_section, section_key, write_section

CHAOS_OLD = "## `make chaos` (full), 2026-12-05 18:22 UTC\n\nold chaos figures\n"
BENCH = "## `make bench`, 2026-12-05 12:28 UTC\n\nredirect figures\n"
QUICK = "## `make chaos` (quick), 2026-12-05 19:00 UTC\n\nquick figures\n"


def test_the_section_is_named_by_its_command_without_the_time() -> None:
    """Two runs of one command have one key; another mode of the command is another section."""
    assert section_key("## `make chaos` (full), 2026-12-05 22:58 UTC") == "## `make chaos` (full)"
    assert section_key("## `make chaos` (full)") == "## `make chaos` (full)"
    assert section_key(CHAOS_OLD.splitlines()[0]) != section_key(QUICK.splitlines()[0])


def test_a_new_report_replaces_the_previous_one_of_its_command_in_place() -> None:
    """The new chaos report takes the old one's place; the other sections stay as they were."""
    document = HEADER + CHAOS_OLD + "\n" + BENCH
    new = "## `make chaos` (full), 2026-12-06 09:00 UTC\n\nnew chaos figures\n"
    written = replace_section(document, new)
    assert written == HEADER + new + "\n" + BENCH
    assert "old chaos figures" not in written


def test_a_report_of_a_command_not_there_yet_is_added_at_the_end() -> None:
    """Quick chaos is a section of its own, after the others; nothing is dropped."""
    written = replace_section(HEADER + CHAOS_OLD + "\n" + BENCH, QUICK)
    assert written == HEADER + CHAOS_OLD + "\n" + BENCH + "\n" + QUICK


def test_older_copies_of_the_same_command_are_dropped() -> None:
    """A document that still holds a history of one command ends with its current report only."""
    older = CHAOS_OLD.replace("18:22", "16:32").replace("old", "older")
    new = "## `make chaos` (full), 2026-12-06 09:00 UTC\n\nnew chaos figures\n"
    written = replace_section(HEADER + CHAOS_OLD + "\n" + BENCH + "\n" + older, new)
    assert written == HEADER + new + "\n" + BENCH


def test_write_section_starts_the_document_and_then_keeps_one_report(tmp_path: Path) -> None:
    """The first report makes the file with its header; a second run of it replaces it."""
    doc = tmp_path / "benchmarks.md"
    write_section(BENCH, doc)
    assert doc.read_text() == HEADER + BENCH
    write_section(BENCH.replace("redirect figures", "faster"), doc)
    assert doc.read_text() == HEADER + BENCH.replace("redirect figures", "faster")
