"""Kafka conventions both services share: partitioning, topic creation, contiguous reads."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a token's clicks: every click of one link lands in one partition.

    CRC-32 rather than the Java client's murmur2: it runs in C (murmur2 is pure
    Python in aiokafka) and shortlink is the only producer on the click topic.
    """
    return zlib.crc32(key) % partitions


async def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    *,
    replication_factor: int = 1,
) -> bool:
    """Create `topic` with `partitions` partitions unless it exists; True if created.

    An existing topic is left as it is (changing partition counts moves keys).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = await admin.list_topics()
        if topic in existing:
            return False
        response = await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor=replication_factor)]
        )
        for _, code, message in getattr(response, "topic_errors", []):
            if code == TopicAlreadyExistsError.errno:
                return False  # created by someone else meanwhile
            if code:
                raise KafkaError(f"creating topic {topic!r} failed ({code}): {message}")
        log.info("created topic", extra={"topic": topic, "partitions": partitions})
        return True
    finally:
        await admin.close()


# How long a reader waits for the offsets before a record to be served before it
# steps over them (a hole that never fills: see Holes).
HOLE_PATIENCE = 10.0


class Holes:
    """Keeps a reader of the click topic from stepping over offsets not yet served.

    Nothing writes the click topic in transactions and nothing compacts it, so the
    offsets of a partition are contiguous. A broker can still serve a record batch
    before an earlier batch of the same partition is readable: tansu 0.6 does,
    under concurrent producers (docs/forwarder.md, "No offset is stepped over"). A
    consumer that took that answer would move its position past the earlier batch
    and never read it. So a record after a hole is held back and the partition is
    read again from the hole; only a hole older than `patience` seconds is stepped
    over, with a warning (Apache Kafka leaves one when retention deleted the
    records before a committed offset). Reading a record twice is harmless: the
    recorder is idempotent on the event id.
    """

    def __init__(
        self, patience: float = HOLE_PATIENCE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._patience = patience
        self._clock = clock
        self._next: dict[TopicPartition, int] = {}  # the offset each partition reads next
        self._since: dict[TopicPartition, float] = {}  # when its open hole was first seen
        self.filled = 0  # holes that filled while held back
        self.skipped = 0  # offsets stepped over

    def unknown(self, partitions: Collection[TopicPartition]) -> list[TopicPartition]:
        """The partitions among `partitions` whose next offset this reader does not know."""
        return [tp for tp in partitions if tp not in self._next]

    def expect(self, tp: TopicPartition, offset: int) -> None:
        """`tp` is read from `offset` on (where the consumer started it)."""
        self._next[tp] = offset
        self._since.pop(tp, None)

    def forget(self, partitions: Collection[TopicPartition]) -> None:
        """Partitions this reader no longer owns (another member moves them on)."""
        for tp in partitions:
            self._next.pop(tp, None)
            self._since.pop(tp, None)

    def take(self, tp: TopicPartition, records: Sequence[Any]) -> tuple[Sequence[Any], int | None]:
        """The records of `tp` to use now, and the offset to read it again from after a hole."""
        expected = self._next.get(tp)
        if records and expected is not None and records[0].offset == expected:
            last = records[-1].offset
            if last == expected + len(records) - 1:  # offsets rise: none is missing
                if self._since.pop(tp, None) is not None:
                    self.filled += 1
                self._next[tp] = last + 1
                return records, None
        for index, record in enumerate(records):
            if expected is not None and record.offset > expected:
                now = self._clock()
                since = self._since.setdefault(tp, now)
                if now - since < self._patience:
                    self._next[tp] = expected
                    return records[:index], expected
                del self._since[tp]
                self.skipped += record.offset - expected
                log.warning(
                    "stepped over offsets never served",
                    extra={
                        "topic": tp.topic,
                        "partition": tp.partition,
                        "from": expected,
                        "to": record.offset,
                        "waited": round(now - since, 1),
                    },
                )
            elif expected is not None and record.offset == expected and tp in self._since:
                del self._since[tp]
                self.filled += 1
            expected = record.offset + 1 if expected is None else max(expected, record.offset + 1)
        if expected is not None:
            self._next[tp] = expected
        return records, None


async def contiguous(
    consumer: AIOKafkaConsumer,
    batches: dict[TopicPartition, list[Any]],
    holes: Holes,
    *,
    grouped: bool,
) -> dict[TopicPartition, list[Any]]:
    """`batches` from `consumer.getmany()` without the records that follow a hole.

    A partition with a hole is sought back to it, so the next getmany reads it
    again. Where a partition starts is learnt once per assignment: its committed
    offset (`grouped` consumers), else its first offset (readers from "earliest").
    """
    unknown = holes.unknown(batches)
    if unknown:
        try:
            starts: dict[TopicPartition, int | None] = {}
            if grouped:
                for tp in unknown:
                    starts[tp] = await consumer.committed(tp)
            missing = [tp for tp in unknown if starts.get(tp) is None]
            if missing:
                starts.update(await consumer.beginning_offsets(missing))
            for tp, offset in starts.items():
                if offset is not None:
                    holes.expect(tp, offset)
        except KafkaError as exc:  # the check starts with the next records of these partitions
            log.warning("could not read where partitions start", extra={"error": repr(exc)})
    kept: dict[TopicPartition, list[Any]] = {}
    for tp, records in batches.items():
        taken, again = holes.take(tp, records)
        if again is not None:
            consumer.seek(tp, again)
        if taken:
            kept[tp] = list(taken)
    return kept
