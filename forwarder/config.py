"""The forwarder's settings, read once from the environment."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import maxminddb

from shortlink.config import EnvReader, ServiceConfig
from shortlink.exceptions import ConfigError
from shortlink.purge import Retention

MAX_BATCH = 100  # ClickDetails per POST, by contract


@dataclass(frozen=True)
class ForwarderConfig:
    service: ServiceConfig
    host: str
    port: int
    workers: int
    group_id: str
    consume_max_records: int
    consume_linger: float  # seconds the broker may hold a fetch to gather more events
    linger: float
    batch_size: int
    timeout: float
    lease: float
    max_attempts: int
    retry_base: float
    retry_max: float
    endpoint_concurrency: int
    ca_file: Path | None
    session_timeout: float
    retention: Retention
    shutdown_timeout: float
    geoip_database: Path | None = None  # a MaxMind DB (.mmdb): country and region by IP
    # The group_instance_id of a static member (FORWARDER_INSTANCE_ID): stable across
    # restarts of the same replica (a StatefulSet pod's name), unique in the group.
    instance_id: str | None = None

    @property
    def allow_private_endpoints(self) -> bool:
        return self.service.allow_private_endpoints

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ForwarderConfig:
        read = EnvReader(env)
        ca_file = read.optional_text("ENDPOINT_CA_FILE")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError(f"ENDPOINT_CA_FILE={ca_file!r}: no such file")
        geoip = read.optional_text("GEOIP_DATABASE")
        if geoip is not None:
            _check_geoip_database(geoip)
        timeout = read.number("DELIVERY_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=600.0)
        lease = read.number("DELIVERY_LEASE_SECONDS", 30.0, minimum=1.0, maximum=7_200.0)
        if timeout > lease / 2:
            # A request must end well inside the lease it was sent under, with time left
            # to record how it went (forwarder.lease).
            raise ConfigError(
                f"DELIVERY_TIMEOUT_SECONDS={timeout:g} must be at most half of "
                f"DELIVERY_LEASE_SECONDS={lease:g}; raise DELIVERY_LEASE_SECONDS "
                f"to {2 * timeout:g} or more"
            )
        return cls(
            service=ServiceConfig.from_env(env),
            host=read.text("FORWARDER_HOST", "127.0.0.1"),
            port=read.integer("FORWARDER_PORT", 8082, minimum=0, maximum=65_535),
            workers=read.integer("FORWARDER_WORKERS", 1, minimum=1, maximum=256),
            group_id=read.text("FORWARDER_GROUP", "shortlink-forwarder"),
            consume_max_records=read.integer(
                "CONSUME_MAX_RECORDS", 2_000, minimum=1, maximum=100_000
            ),
            consume_linger=read.integer("CONSUME_LINGER_MS", 250, minimum=1, maximum=5_000) / 1000,
            linger=read.integer("DELIVERY_LINGER_MS", 1_000, minimum=0, maximum=600_000) / 1000,
            batch_size=read.integer("DELIVERY_BATCH_SIZE", MAX_BATCH, minimum=1, maximum=MAX_BATCH),
            timeout=timeout,
            lease=lease,
            max_attempts=read.integer("DELIVERY_MAX_ATTEMPTS", 10, minimum=1, maximum=1_000),
            retry_base=read.number(
                "DELIVERY_RETRY_BASE_SECONDS", 5.0, minimum=0.01, maximum=86_400.0
            ),
            retry_max=read.number(
                "DELIVERY_RETRY_MAX_SECONDS", 3_600.0, minimum=0.01, maximum=7 * 86_400.0
            ),
            endpoint_concurrency=read.integer("ENDPOINT_CONCURRENCY", 1, minimum=1, maximum=100),
            ca_file=Path(ca_file) if ca_file else None,
            session_timeout=read.integer(
                "KAFKA_SESSION_TIMEOUT_MS", 6_000, minimum=1_000, maximum=300_000
            )
            / 1000,
            shutdown_timeout=read.number(
                "SHUTDOWN_TIMEOUT_SECONDS", 10.0, minimum=0.0, maximum=600.0
            ),
            geoip_database=Path(geoip) if geoip else None,
            retention=Retention.from_env(env),
            instance_id=_instance_id(read.optional_text("FORWARDER_INSTANCE_ID")),
        )

    def worker(self, index: int) -> ForwarderConfig:
        """The settings of worker `index` of `workers`: each its own static member id."""
        if self.instance_id is None or self.workers == 1:
            return self
        return dataclasses.replace(self, instance_id=f"{self.instance_id}-{index}")


_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _instance_id(value: str | None) -> str | None:
    """A static member id Kafka accepts (letters, digits, '.', '_', '-'), or None."""
    if value is None:
        return None
    if not _INSTANCE_ID.fullmatch(value):
        raise ConfigError(
            f"FORWARDER_INSTANCE_ID={value[:50]!r}: 1 to 200 letters, digits, '.', '_' or '-'"
        )
    return value


def _check_geoip_database(path: str) -> None:
    """Refuse a GEOIP_DATABASE that is missing or not a MaxMind DB, at start."""
    if not Path(path).is_file():
        raise ConfigError(f"GEOIP_DATABASE={path!r}: no such file")
    try:
        maxminddb.open_database(path, maxminddb.MODE_AUTO).close()
    except (maxminddb.InvalidDatabaseError, OSError, ValueError) as exc:
        raise ConfigError(f"GEOIP_DATABASE={path!r}: not a MaxMind DB file ({exc})") from None
