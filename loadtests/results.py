"""docs/benchmarks.md: the current figures of each benchmark command.

A report is a Markdown section whose first line names the command that made it, then
when it ran ("## `make chaos` (full), 2026-12-05 22:58 UTC"). Writing a report replaces
the section of the same command, wherever it is, or adds it at the end: the document
keeps the current figures, and git keeps their history.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DOC = ROOT / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nFigures from the project's own benchmark commands.\n\n"
_WHEN = re.compile(r",? *\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC.*$")


def section_key(first_line: str) -> str:
    """What identifies a report's section: its heading without the time it ran."""
    return _WHEN.sub("", first_line.strip())


def sections(text: str) -> tuple[str, list[str]]:
    """The text before the first `## ` heading, and each section from its heading on."""
    head, *found = re.split(r"(?m)^(?=## )", text)
    return head, found


def replace_section(document: str, report: str) -> str:
    """`document` with `report` in place of the section of the same command (or added)."""
    head, found = sections(document or HEADER)
    report = report.strip("\n") + "\n\n"
    key = section_key(report.splitlines()[0])
    same = [i for i, part in enumerate(found) if section_key(part.splitlines()[0]) == key]
    if same:
        found[same[0]] = report
        found = [part for i, part in enumerate(found) if i not in same[1:]]
    else:
        if found:
            found[-1] = found[-1].rstrip("\n") + "\n\n"
        found.append(report)
    return (head + "".join(found)).rstrip("\n") + "\n"


def write_section(report: str, path: Path = RESULTS_DOC) -> None:
    """Put a report in docs/benchmarks.md in place of the previous one of its command."""
    existing = path.read_text() if path.exists() else ""
    path.write_text(replace_section(existing, report))
