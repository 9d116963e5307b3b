"""`make broker-order`: does the broker serve a partition's batches in offset order?

Starts its own tansu broker (as `make run` does) and a topic of PARTITIONS
partitions; PRODUCERS producers send record batches of 1 to 15 records with
`send_batch`, as the redirect server's publisher does, in turn to each partition,
for SECONDS. Two group consumers read the topic meanwhile, as the forwarder does
(fetch_max_wait_ms 100, offsets committed after each getmany): one takes what
the broker serves, the other reads through shortlink.kafka.contiguous. At the
end both are compared with what was sent.

With tansu 0.6 the first consumer misses whole batches now and then: the broker
served a later batch of the partition before an earlier one was readable, and the
consumer's position moved past it. The second misses none (it reads the partition
again from the hole). Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shortlink.dev import embedded
from shortlink.kafka import Holes, contiguous, ensure_topic

TOPIC = "broker-order"


async def produce(bootstrap: str, worker: int, partitions: int, until: float) -> set[bytes]:
    sent: set[bytes] = set()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        n = 0
        while time.monotonic() < until:
            batch = producer.create_batch()
            values = [f"{worker}-{n}-{k}".encode() for k in range(1 + n % 15)]
            for value in values:
                batch.append(key=None, value=value, timestamp=None)
            await (await producer.send_batch(batch, TOPIC, partition=n % partitions))
            sent.update(values)
            n += 1
            await asyncio.sleep(0.002)
    finally:
        await producer.stop()
    return sent


async def read(bootstrap: str, group: str, holes: Holes | None, stop: asyncio.Event) -> set[bytes]:
    """Read as the forwarder does until `stop` is set and three polls in a row are empty."""
    got: set[bytes] = set()
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_poll_records=500,
    )
    await consumer.start()
    try:
        empty = 0
        while empty < 3:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            if holes is not None:
                batches = await contiguous(consumer, batches, holes, grouped=True)
            for records in batches.values():
                got.update(record.value for record in records if record.value is not None)
            if batches:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
            empty = empty + 1 if stop.is_set() and not batches else 0
    finally:
        await consumer.stop()
    return got


async def measure(bootstrap: str, args: argparse.Namespace) -> None:
    await ensure_topic(bootstrap, TOPIC, args.partitions)
    stop, holes = asyncio.Event(), Holes()
    readers = [
        asyncio.create_task(read(bootstrap, "contiguous", holes, stop)),
        asyncio.create_task(read(bootstrap, "as-served", None, stop)),
    ]
    until = time.monotonic() + args.seconds
    try:
        sent = set().union(
            *await asyncio.gather(
                *(produce(bootstrap, w, args.partitions, until) for w in range(args.producers))
            )
        )
        stop.set()
        guarded, as_served = await asyncio.gather(*readers)
    finally:  # a producer that failed leaves no reader running
        for reader in readers:
            reader.cancel()
    print(
        f"{args.producers} producers, {args.partitions} partitions, {args.seconds:.0f} s: "
        f"{len(sent):,} records sent"
    )
    print(f"  read as served:         {len(sent - as_served):,} missed")
    print(
        f"  read through contiguous: {len(sent - guarded):,} missed "
        f"({holes.filled} holes filled, {holes.skipped} offsets stepped over)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="broker-order-") as folder:
        broker = embedded.Broker(
            embedded.DEV_BROKER_HOST, embedded.free_port(), Path(folder) / "tansu.log"
        )
        broker.start()
        try:
            asyncio.run(measure(broker.bootstrap_servers, args))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
