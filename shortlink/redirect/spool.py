"""The click spool: encoded click records on local disk while Kafka is unreachable.

One append-only file per redirect worker (`redirect-<index>.spool`), locked
with flock so two processes never share one. Each line is `token TAB timestamp_ms TAB value`
(the value is JSON, which never contains a raw newline). Replay reads from a
committed offset (kept in `<name>.offset`) forward, so records go out in the
order they were spooled, and a crash during replay re-sends at most the batch in
flight (the forwarder drops duplicates by event id). When everything is replayed
the file is truncated.

Appends are plain writes into the page cache, cheap enough for the event loop;
`sync()` (run in a thread) makes them durable against a machine crash too.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
from collections.abc import Container, Iterator, Sequence
from pathlib import Path

from shortlink.exceptions import SpoolLocked

_READ_CHUNK = 1 << 20
_PUNCH_EVERY = 16 << 20
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


# (key, timestamp_ms, value): the Kafka key is the token, as bytes. A plain tuple,
# because the flusher builds one per click.
Record = tuple[bytes, int, bytes]


class Spool:
    """An append-only, replayable file of click records."""

    def __init__(self, directory: Path, name: str, max_bytes: int) -> None:
        self.path = directory / f"{name}.spool"
        self._offset_path = directory / f"{name}.offset"
        self.max_bytes = max_bytes
        self.dropped = 0  # records refused because the spool was full
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(f"{self.path} is in use by another process") from None
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._repair_tail()
        self._offset = self._read_offset()
        self._dirty = False
        self._punched = 0  # replayed bytes whose disk blocks were given back
        self.corrupt = 0  # unreadable lines skipped during replay
        self.write_errors = 0
        self.last_error: OSError | None = None

    def _repair_tail(self) -> None:
        """Cut a torn last line (a crash mid-write) so new records start on a line of their own."""
        end = self._size
        while end > 0:
            start = max(0, end - _READ_CHUNK)
            chunk = os.pread(self._fd, end - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end != self._size:
            os.ftruncate(self._fd, end)
            self._size = end

    def _read_offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0
        return min(max(offset, 0), self._size)

    @property
    def size(self) -> int:
        """Bytes in the file (replayed ones included until the file is truncated)."""
        return self._size

    @property
    def pending_bytes(self) -> int:
        return self._size - self._offset

    @property
    def pending(self) -> bool:
        return self._size > self._offset

    def append(self, records: Sequence[Record]) -> int:
        """Write records at the end; returns how many were kept.

        At most `max_bytes` wait for replay at any time (bytes already replayed do
        not count). A write that fails (disk full, I/O error) keeps nothing of the
        call: a partial write is cut off again, so the next record starts on a line
        of its own, and the error is in `last_error`.
        """
        data = bytearray()
        accepted = 0
        room = self.max_bytes - self.pending_bytes
        for key, timestamp_ms, value in records:
            line = b"%s\t%d\t%s\n" % (key, timestamp_ms, value)
            if len(data) + len(line) > room:
                break
            data += line
            accepted += 1
        if data:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError as exc:
                self.write_errors += 1
                self.last_error = exc
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                accepted = 0
            else:
                self._size += len(data)
                self._dirty = True
        self.dropped += len(records) - accepted
        return accepted

    def read(self, max_records: int) -> tuple[list[Record], int]:
        """Up to `max_records` records from the committed offset, and the offset after them."""
        records: list[Record] = []
        offset = self._offset
        while len(records) < max_records and offset < self._size:
            chunk = os.pread(self._fd, min(_READ_CHUNK, self._size - offset), offset)
            end = chunk.rfind(b"\n")
            if end < 0:
                # No record is this long (values are bounded by the redirect server);
                # skip the chunk rather than stall the replay forever.
                self.corrupt += 1
                offset += len(chunk)
                continue
            position = 0
            while position <= end and len(records) < max_records:
                newline = chunk.index(b"\n", position)
                record = _parse(chunk[position:newline])
                if record is None:
                    self.corrupt += 1
                else:
                    records.append(record)
                position = newline + 1
            offset += position
        return records, offset

    def commit(self, offset: int) -> None:
        """Mark everything before `offset` as replayed; truncate when all of it is.

        While a long replay goes on, the disk blocks of what is already replayed
        are given back (a hole is punched), so the file's disk use stays about
        the bytes still pending, however much was appended meanwhile.
        """
        if offset >= self._size:
            os.ftruncate(self._fd, 0)
            self._size = 0
            self._offset = 0
            self._punched = 0
            with contextlib.suppress(FileNotFoundError):
                self._offset_path.unlink()
            return
        self._offset = offset
        temporary = self._offset_path.with_suffix(".offset.tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, self._offset_path)
        if offset - self._punched >= _PUNCH_EVERY and _punch_hole(self._fd, offset):
            self._punched = offset

    def sync(self) -> None:
        """Flush appended records to disk (blocking: run it in a thread)."""
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the lock
            self._fd = -1

    def remove(self) -> None:
        """Delete the files of an empty spool (an adopted one, fully replayed)."""
        self.close()
        for path in (self.path, self._offset_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _punch_hole(fd: int, length: int) -> bool:
    """Free the disk blocks of the file's first `length` bytes (Linux; False elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.fallocate(
            fd,
            _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
            ctypes.c_long(0),
            ctypes.c_long(length),
        )
    except (OSError, AttributeError):
        return False
    return bool(result == 0)


def _parse(line: bytes) -> Record | None:
    parts = line.split(b"\t", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return (parts[0], int(parts[1]), parts[2])


def open_own(directory: Path, name: str, max_bytes: int) -> Spool:
    """The spool `name`, or `name-<pid>` when another live process holds `name`.

    A second deployment on the same data folder (a second `make run`, a rolling
    restart that overlaps) then spools beside the first instead of failing.
    """
    try:
        return Spool(directory, name, max_bytes)
    except SpoolLocked:
        return Spool(directory, f"{name}-{os.getpid()}", max_bytes)


def orphans(directory: Path, max_bytes: int, running: Container[str]) -> Iterator[Spool]:
    """Spools left by workers that no longer run, to replay on their behalf.

    `running` names the spools of this deployment's workers: each of those
    replays its own file when it (re)starts, so they are never adopted, even
    while a sibling is still starting and has not locked its file yet. Any
    other spool whose lock is free belongs to no running process.
    """
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.spool")):
        if path.stem in running:
            continue
        try:
            yield Spool(directory, path.stem, max_bytes)
        except SpoolLocked:
            continue
