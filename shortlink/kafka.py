"""Kafka conventions both services share: partitioning and topic creation."""

from __future__ import annotations

import logging
import zlib

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
