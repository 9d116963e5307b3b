"""Reading the click topic without stepping over offsets the broker has not served yet."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shortlink.kafka import Holes, contiguous, ensure_topic
from tests.infra import unique_name, wait_until

TP = TopicPartition("clicks", 0)


@dataclass
class Record:
    offset: int


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def offsets(records: object) -> list[int]:
    return [record.offset for record in records]  # type: ignore[attr-defined]


def test_contiguous_records_pass_and_move_the_next_offset() -> None:
    """Records that follow on from the expected offset are all taken."""
    holes = Holes()
    holes.expect(TP, 10)
    taken, again = holes.take(TP, [Record(10), Record(11), Record(12)])
    assert (offsets(taken), again) == ([10, 11, 12], None)
    taken, again = holes.take(TP, [Record(13)])
    assert (offsets(taken), again) == ([13], None)
    assert (holes.filled, holes.skipped) == (0, 0)


def test_records_after_a_hole_are_held_back_until_it_fills() -> None:
    """A record past a hole is held back and the partition read again from the hole."""
    clock = Clock()
    holes = Holes(patience=10.0, clock=clock)
    holes.expect(TP, 10)
    taken, again = holes.take(TP, [Record(10), Record(11), Record(15), Record(16)])
    assert (offsets(taken), again) == ([10, 11], 12)
    clock.now = 3.0
    taken, again = holes.take(TP, [Record(15), Record(16)])  # still not served
    assert (offsets(taken), again) == ([], 12)
    taken, again = holes.take(TP, [Record(12), Record(13), Record(14), Record(15)])
    assert (offsets(taken), again) == ([12, 13, 14, 15], None)
    assert (holes.filled, holes.skipped) == (1, 0)


def test_a_hole_older_than_the_patience_is_stepped_over() -> None:
    """After `patience` seconds the reader steps over the hole and counts the offsets."""
    clock = Clock()
    holes = Holes(patience=10.0, clock=clock)
    holes.expect(TP, 0)
    assert holes.take(TP, [Record(5)])[1] == 0
    clock.now = 9.9
    assert holes.take(TP, [Record(5)])[1] == 0
    clock.now = 10.0
    taken, again = holes.take(TP, [Record(5), Record(6)])
    assert (offsets(taken), again) == ([5, 6], None)
    assert (holes.filled, holes.skipped) == (0, 5)
    clock.now = 11.0
    taken, again = holes.take(TP, [Record(8)])  # a new hole waits its own patience
    assert (offsets(taken), again) == ([], 7)


def test_records_read_again_are_taken() -> None:
    """Offsets below the expected one (read again after a seek) are taken, not a hole."""
    holes = Holes()
    holes.expect(TP, 10)
    taken, again = holes.take(TP, [Record(8), Record(9), Record(10)])
    assert (offsets(taken), again) == ([8, 9, 10], None)
    assert holes.take(TP, [Record(11)])[1] is None


def test_unknown_and_forgotten_partitions_accept_what_comes() -> None:
    """A partition with no known start takes its first records as they come; forget resets it."""
    holes = Holes()
    other = TopicPartition("clicks", 1)
    assert holes.unknown([TP, other]) == [TP, other]
    assert holes.take(TP, [Record(7)]) == ([Record(7)], None)
    assert holes.unknown([TP, other]) == [other]
    holes.forget([TP])
    assert holes.unknown([TP]) == [TP]
    assert holes.take(TP, [Record(20)])[1] is None


async def test_contiguous_reads_a_partition_again_from_its_hole(kafka_bootstrap: str) -> None:
    """On the broker: a consumer served offsets 5.. before 0..4 seeks back and reads all ten."""
    topic = unique_name("holes")
    await ensure_topic(kafka_bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, str(n).encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    holes = Holes()
    read: list[int] = []
    try:
        await consumer.getmany(timeout_ms=100)  # assigned
        consumer.seek(tp, 5)  # as a broker that served a later batch first would leave it

        async def all_read() -> bool:
            batches = await consumer.getmany(timeout_ms=300)
            for records in (await contiguous(consumer, batches, holes, grouped=False)).values():
                read.extend(offsets(records))
            return len(read) >= 10

        await wait_until(all_read, within=15, step=0, what="the ten records read")
    finally:
        await consumer.stop()
    assert read == list(range(10))
    assert (holes.filled, holes.skipped) == (1, 0)
