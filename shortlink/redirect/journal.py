"""The click journal: every click on a shared file mapping before its redirect is answered.

A redirect worker's clicks wait in memory for the flusher (up to the linger time
and a broker round trip). A SIGKILL, an OOM kill or a crash of the process would
lose them. So `submit` also copies each encoded click into a ring of records in a
file mapped with MAP_SHARED (`<name>.journal` beside the spool): a memory copy, no
system call. The kernel owns those pages (the file's page cache) the moment the
copy is done, so they outlive the process; the next worker with the same spool
directory moves what the journal still holds to the spool, which replays it to
Kafka with the events' original ids (the forwarder drops an event id it has
already recorded, so a click both sent and journaled is recorded once).

What is not written to disk yet is lost with the machine (a kernel panic, a power
cut): the journal is not fsynced, as a redirect cannot wait for a disk. The
kernel writes dirty pages back within about 30 s (vm.dirty_expire_centisecs).

Layout: a 64-byte header (magic, then at byte 8 the offset of the oldest record
not yet acknowledged, the tail), then records from byte 64: a 4-byte length, the
event (the message value; its token and time are read from it again when it is
recovered, which is rare, rather than written beside it per click) padded to 4 bytes. A
length of 0 ends the records; WRAP sends the reader back to byte 64. A record is
written as: the end mark after it, its bytes, then its length, so a process killed
in the middle leaves an end mark where the half-written record starts.

Records are released in the order the publisher takes them from its buffer
(`cut` at each take, `release` when the batch is acknowledged or spooled): the
tail moves past a batch once it and every batch before it are released.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from shortlink import clickevent
from shortlink.exceptions import InvalidClickEvent
from shortlink.redirect.spool import Record

MAGIC = b"SLJ1"
HEADER = 64
WRAP = 0xFFFFFFFF
MIN_BYTES = 64 << 10
_LENGTH = struct.Struct("<I")
_TAIL = struct.Struct("<Q")
_ZERO = bytes(4)


class Ticket:
    """The journal up to the end of one batch taken from the buffer, until it is released."""

    __slots__ = ("end", "released")

    def __init__(self, end: int) -> None:
        self.end = end
        self.released = False


class Journal:
    """A ring of click records in a MAP_SHARED file mapping (see the module docstring).

    Starts empty: `recover` what a previous process left first. The caller owns the
    file exclusively (the spool of the same name is flock'ed).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        size = max(MIN_BYTES, size) & ~3
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, 0)
            # Blocks reserved now: a write into a mapped hole of a full disk would be a
            # SIGBUS, not an error (raises OSError here instead, at start).
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._size = size
        _TAIL.pack_into(self._map, 8, HEADER)
        self._map[:4] = MAGIC
        self._tail = self._head = HEADER
        self._limit = size  # how far appends may write (the tail once the ring went round)
        self._tickets: list[Ticket] = []

    def append(self, value: bytes) -> bool:
        """Copy one event in; False (nothing written) when the ring has no room for it.

        Runs once per redirect: the common case is three copies into the mapping."""
        length = len(value)
        head = self._head
        end = head + 4 + ((length + 3) & ~3)
        if end + 4 > self._limit:
            return self._go_round(value)
        mapping = self._map
        mapping[end : end + 4] = _ZERO
        mapping[head + 4 : head + 4 + length] = value
        _LENGTH.pack_into(mapping, head, length)
        self._head = end
        return True

    def _go_round(self, value: bytes) -> bool:
        """No room before the end of the ring: go back to its start, if that is free."""
        tail = self._tail
        needed = 4 + ((len(value) + 3) & ~3)
        if tail > self._head or HEADER + needed + 4 > tail:
            return False  # wrapped already and full, or the start is not released yet
        self._map[HEADER : HEADER + 4] = _ZERO
        _LENGTH.pack_into(self._map, self._head, WRAP)
        self._head = HEADER
        self._limit = tail
        return self.append(value)

    def cut(self) -> Ticket:
        """A ticket for every record appended so far and not in an earlier ticket."""
        ticket = Ticket(self._head)
        self._tickets.append(ticket)
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The ticket's records are acknowledged or spooled: move the tail past what is done."""
        ticket.released = True
        tickets = self._tickets
        moved = False
        while tickets and tickets[0].released:
            self._tail = tickets.pop(0).end
            moved = True
        if moved:
            _TAIL.pack_into(self._map, 8, self._tail)
            # Appends may run up to the tail while it is ahead of the head, else to the end.
            self._limit = self._tail if self._tail > self._head else self._size

    @property
    def pending_bytes(self) -> int:
        """Bytes of records not yet released (a ring: the distance from tail to head)."""
        if self._head >= self._tail:
            return self._head - self._tail
        return self._size - self._tail + self._head - HEADER

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()


def _records(mapping: mmap.mmap, size: int) -> Iterator[Record]:
    """The records from the stored tail to the end mark (a torn or corrupt one ends them)."""
    if mapping[:4] != MAGIC:
        return
    (position,) = _TAIL.unpack_from(mapping, 8)
    if not HEADER <= position <= size - 4:
        return
    wrapped = False
    while position <= size - 4:  # a file cut short ends inside a record's length
        (length,) = _LENGTH.unpack_from(mapping, position)
        if length == WRAP:
            if wrapped:
                return
            wrapped, position = True, HEADER
            continue
        end = position + 4 + length
        if length == 0 or end > size - 4:
            return
        record = _record(mapping[position + 4 : end])
        if record is not None:
            yield record
        position += 4 + ((length + 3) & ~3)
        if wrapped and position >= _TAIL.unpack_from(mapping, 8)[0]:
            return


def _record(value: bytes) -> Record | None:
    """The spool record of a journaled event (key and time read from the event)."""
    try:
        event = clickevent.decode(value)
    except InvalidClickEvent:
        return None
    return (event.token.encode(), event.clicked_at_ms, value)


def recover(path: Path) -> list[Record]:
    """The records a previous process left unacknowledged in the journal at `path` (any
    size); remove the file once they are safely elsewhere (the spool)."""
    try:
        # Non-blocking: a named pipe in its place would wait for a writer (and the start).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    try:
        status = os.fstat(fd)
        size = status.st_size
        if not stat.S_ISREG(status.st_mode) or size < HEADER + 4:
            return []
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mapping:
            return list(_records(mapping, size))
    finally:
        os.close(fd)


def journal_path(directory: Path, spool_name: str) -> Path:
    """The journal beside the spool `spool_name` (same owner: the spool's flock)."""
    return directory / f"{spool_name}.journal"
