"""The click spool: ordered replay, crash safety, size limit, one owner per file."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shortlink.exceptions import SpoolLocked
from shortlink.redirect.spool import Record, Spool, open_own, orphans


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
    found = list(orphans(tmp_path, 1 << 20, running={"redirect-0"}))
    assert [s.path.name for s in found] == ["redirect-3.spool"]
    assert found[0].read(10)[0] == records(2)
    found[0].remove()
    assert not (tmp_path / "redirect-3.spool").exists()
    held.close()


def test_a_starting_siblings_spool_is_never_adopted(tmp_path: Path) -> None:
    """An unlocked spool named for a worker of this deployment is left for that worker."""
    for name in ("redirect-1", "redirect-5"):
        left = Spool(tmp_path, name, 1 << 20)
        left.append(records(1))
        left.close()
    running = {"redirect-0", "redirect-1", "redirect-2"}
    found = list(orphans(tmp_path, 1 << 20, running=running))
    assert [s.path.name for s in found] == ["redirect-5.spool"]
    for spool in found:
        spool.close()
    sibling = Spool(tmp_path, "redirect-1", 1 << 20)  # the sibling can still take its own
    assert sibling.read(10)[0] == records(1)
    sibling.close()


def test_a_second_instance_spools_beside_the_first(tmp_path: Path) -> None:
    """When another process holds a worker's spool, a second one gets a file of its own."""
    first = open_own(tmp_path, "redirect-0", 1 << 20)
    second = open_own(tmp_path, "redirect-0", 1 << 20)
    assert first.path.name == "redirect-0.spool"
    assert second.path.name == f"redirect-0-{os.getpid()}.spool"
    first.close()
    second.close()


def test_a_full_disk_drops_the_records_and_raises_nothing(tmp_path: Path) -> None:
    """A write that fails with ENOSPC (the file is /dev/full) keeps nothing and raises nothing."""
    (tmp_path / "w0.spool").symlink_to("/dev/full")
    spool = Spool(tmp_path, "w0", 1 << 20)
    assert spool.append(records(3)) == 0
    assert spool.dropped == 3
    assert spool.write_errors == 1
    assert isinstance(spool.last_error, OSError)
    assert spool.last_error.errno == errno.ENOSPC
    assert not spool.pending
    spool.close()


PARTIAL_WRITE = """
import resource, signal, sys
from pathlib import Path
from shortlink.redirect.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
records = [(b"Tok%04d" % i, 1, b"x" * 90) for i in range(30)]
spool = Spool(Path(sys.argv[1]), "w0", 1 << 20)
assert spool.append(records[:10]) == 10
size = spool.size
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 150, hard))
assert spool.append(records[10:20]) == 0  # a short write, then EFBIG
assert spool.size == size and Path(sys.argv[1], "w0.spool").stat().st_size == size
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
assert spool.append(records[20:]) == 10
read, _ = spool.read(100)
assert [r[0] for r in read] == [r[0] for r in records[:10] + records[20:]], read
assert spool.corrupt == 0
print("ok")
"""


def test_a_partial_write_is_cut_off_so_the_next_record_is_intact(tmp_path: Path) -> None:
    """A write cut short by a file size limit leaves no torn line in front of later records."""
    result = subprocess.run(
        [sys.executable, "-c", PARTIAL_WRITE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_room_counts_only_what_waits_for_replay(tmp_path: Path) -> None:
    """Once part of a full spool is replayed, new records fit again while the replay goes on."""
    spool = Spool(tmp_path, "w0", 2_000)
    batch = records(100)
    kept = spool.append(batch)
    assert 0 < kept < 100  # full
    assert spool.append(records(1, start=500)) == 0
    _, offset = spool.read(kept // 2)
    spool.commit(offset)
    assert spool.append(records(5, start=600)) == 5
    spool.close()


def test_replayed_bytes_give_their_disk_blocks_back(tmp_path: Path) -> None:
    """During a long replay the replayed part of the file stops taking disk space."""
    spool = Spool(tmp_path, "w0", 1 << 30)
    value = b"v" * 1000
    spool.append([(b"Tok%06d" % i, 1, value) for i in range(40_000)])  # ~40 MB
    spool.sync()
    before = os.stat(spool.path).st_blocks
    _, offset = spool.read(30_000)
    spool.commit(offset)
    after = os.stat(spool.path).st_blocks
    assert os.stat(spool.path).st_size == spool.size  # offsets unchanged
    assert after < before * 0.4
    rest, _ = spool.read(100_000)
    assert len(rest) == 10_000
    spool.close()


def test_sync_flushes_to_disk(tmp_path: Path) -> None:
    """sync() fsyncs appended data (and is a no-op when nothing changed)."""
    spool = Spool(tmp_path, "w0", 1 << 20)
    spool.append(records(1))
    spool.sync()
    spool.sync()
    assert os.path.getsize(tmp_path / "w0.spool") == spool.size
