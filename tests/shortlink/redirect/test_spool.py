"""The click spool: ordered replay, crash safety, size limit, one owner per file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shortlink.redirect.spool import Record, Spool, SpoolLocked, orphans


def records(n: int, start: int = 0) -> list[Record]:
    return [
        (b"Tok%04d" % i, 1_700_000_000_000 + i, b'{"n":%d}' % i) for i in range(start, start + n)
    ]


def test_records_replay_in_order_and_the_file_empties(tmp_path: Path) -> None:
    """Appended records are read back in order; committing all of them truncates the file."""
    spool = Spool(tmp_path, "w0", 1 << 20)
    assert spool.append(records(10)) == 10
    first, offset = spool.read(4)
    assert first == records(4)
    spool.commit(offset)
    rest, offset = spool.read(100)
    assert rest == records(6, start=4)
    spool.commit(offset)
    assert spool.size == 0
    assert not spool.pending
    assert spool.read(10) == ([], 0)


def test_committed_offset_survives_a_restart(tmp_path: Path) -> None:
    """A new process resumes after the last committed record, not from the start."""
    spool = Spool(tmp_path, "w0", 1 << 20)
    spool.append(records(5))
    _, offset = spool.read(2)
    spool.commit(offset)
    spool.close()
    again = Spool(tmp_path, "w0", 1 << 20)
    assert again.read(10)[0] == records(3, start=2)


def test_torn_last_line_is_cut_at_open(tmp_path: Path) -> None:
    """A half-written last line (a crash mid-write) is removed so new records stay readable."""
    spool = Spool(tmp_path, "w0", 1 << 20)
    spool.append(records(2))
    spool.close()
    with open(tmp_path / "w0.spool", "ab") as f:
        f.write(b"Tok9999\t17000")
    again = Spool(tmp_path, "w0", 1 << 20)
    again.append(records(1, start=2))
    assert again.read(10)[0] == records(3)
    assert again.corrupt == 0


def test_unreadable_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    """A garbage line does not stall the replay: it is skipped and counted."""
    (tmp_path / "w0.spool").write_bytes(b"garbage\n" + b"Tok0001\t5\t{}\n")
    spool = Spool(tmp_path, "w0", 1 << 20)
    assert spool.read(10)[0] == [(b"Tok0001", 5, b"{}")]
    assert spool.corrupt == 1


def test_size_limit_refuses_and_counts(tmp_path: Path) -> None:
    """Records beyond max_bytes are refused and counted as dropped."""
    spool = Spool(tmp_path, "w0", 100)
    accepted = spool.append(records(10))
    assert 0 < accepted < 10
    assert spool.dropped == 10 - accepted
    assert spool.size <= 100


def test_one_process_per_spool_file(tmp_path: Path) -> None:
    """A second owner of the same spool file is refused."""
    Spool(tmp_path, "w0", 1 << 20)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path, "w0", 1 << 20)


def test_orphans_are_found_and_removed(tmp_path: Path) -> None:
    """Spools of workers that no longer run are adopted; locked ones and our own are not."""
    left = Spool(tmp_path, "redirect-3", 1 << 20)
    left.append(records(2))
    left.close()
    held = Spool(tmp_path, "redirect-1", 1 << 20)
    found = list(orphans(tmp_path, 1 << 20, own_name="redirect-0"))
    assert [s.path.name for s in found] == ["redirect-3.spool"]
    assert found[0].read(10)[0] == records(2)
    found[0].remove()
    assert not (tmp_path / "redirect-3.spool").exists()
    held.close()


def test_sync_flushes_to_disk(tmp_path: Path) -> None:
    """sync() fsyncs appended data (and is a no-op when nothing changed)."""
    spool = Spool(tmp_path, "w0", 1 << 20)
    spool.append(records(1))
    spool.sync()
    spool.sync()
    assert os.path.getsize(tmp_path / "w0.spool") == spool.size
