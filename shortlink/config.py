"""Configuration: one frozen dataclass per service, read once from the environment.

Every setting is read here and nowhere else. An invalid value raises ConfigError
naming the variable, so a service refuses to start instead of guessing.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shortlink import tokens
from shortlink.exceptions import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REDIRECT_STATUSES = (301, 302, 307, 308)


class EnvReader:
    """Typed, validated access to environment variables."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional_text(self, name: str) -> str | None:
        return self.raw(name)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected an integer") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number}: must be between {minimum} and {maximum}")
        return number

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r}: expected a number") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number}: must be between {minimum} and {maximum}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r}: expected true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
        return value

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        networks = []
        for part in value.split(","):
            item = part.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"{name}: {item!r} is not an IP address or CIDR") from None
        return tuple(networks)


@dataclass(frozen=True)
class ServiceConfig:
    """Settings every service shares: where the data lives and how to log."""

    database_url: str | None
    kafka_bootstrap_servers: str | None
    data_dir: Path
    click_topic: str
    click_topic_partitions: int
    database_pool_size: int
    log_level: str
    token_length: int
    allow_private_endpoints: bool
    metrics_host: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceConfig:
        read = EnvReader(env)
        return cls(
            database_url=read.optional_text("DATABASE_URL"),
            kafka_bootstrap_servers=read.optional_text("KAFKA_BOOTSTRAP_SERVERS"),
            data_dir=Path(read.text("SHORTLINK_DATA_DIR", ".data")).absolute(),
            click_topic=read.text("CLICK_TOPIC", "clicks"),
            click_topic_partitions=read.integer(
                "CLICK_TOPIC_PARTITIONS", 6, minimum=1, maximum=10_000
            ),
            database_pool_size=read.integer("DATABASE_POOL_SIZE", 10, minimum=1, maximum=1_000),
            log_level=read.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
            allow_private_endpoints=read.flag("ALLOW_PRIVATE_ENDPOINTS", False),
            token_length=read.integer(
                "TOKEN_LENGTH",
                tokens.DEFAULT_LENGTH,
                minimum=tokens.MIN_LENGTH,
                maximum=tokens.MAX_LENGTH,
            ),
            metrics_host=read.text("METRICS_HOST", "127.0.0.1"),
        )


@dataclass(frozen=True)
class RedirectConfig:
    """Settings of the redirect server (`shortlink redirect`)."""

    service: ServiceConfig
    host: str
    port: int
    metrics_port: int  # 0: no metrics server
    workers: int
    redirect_status: int
    cache_entries: int
    negative_cache_entries: int
    negative_cache_ttl: float
    trusted_proxies: tuple[IPNetwork, ...]
    publish_buffer_events: int
    publish_linger: float
    kafka_request_timeout: float
    spool_dir: Path
    spool_max_bytes: int
    shutdown_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedirectConfig:
        read = EnvReader(env)
        service = ServiceConfig.from_env(env)
        status = read.integer("REDIRECT_STATUS", 302, minimum=300, maximum=399)
        if status not in REDIRECT_STATUSES:
            raise ConfigError(
                f"REDIRECT_STATUS={status}: expected one of "
                f"{', '.join(map(str, REDIRECT_STATUSES))}"
            )
        spool_dir = read.optional_text("SPOOL_DIR")
        return cls(
            service=service,
            host=read.text("REDIRECT_HOST", "127.0.0.1"),
            port=read.integer("REDIRECT_PORT", 8080, minimum=0, maximum=65_535),
            metrics_port=read.integer("REDIRECT_METRICS_PORT", 9101, minimum=0, maximum=65_535),
            workers=read.integer("REDIRECT_WORKERS", os.cpu_count() or 1, minimum=1, maximum=256),
            redirect_status=status,
            cache_entries=read.integer("LINK_CACHE_ENTRIES", 500_000, minimum=1, maximum=10**9),
            negative_cache_entries=read.integer(
                "NEGATIVE_CACHE_ENTRIES", 100_000, minimum=1, maximum=10**9
            ),
            negative_cache_ttl=read.number(
                "NEGATIVE_CACHE_TTL_SECONDS", 5.0, minimum=0.0, maximum=3600.0
            ),
            trusted_proxies=read.networks("TRUSTED_PROXIES"),
            publish_buffer_events=read.integer(
                "PUBLISH_BUFFER_EVENTS", 100_000, minimum=1, maximum=10**8
            ),
            publish_linger=read.integer("PUBLISH_LINGER_MS", 50, minimum=0, maximum=600_000) / 1000,
            kafka_request_timeout=read.integer(
                "KAFKA_REQUEST_TIMEOUT_MS", 5_000, minimum=100, maximum=600_000
            )
            / 1000,
            spool_dir=Path(spool_dir).absolute() if spool_dir else service.data_dir / "spool",
            spool_max_bytes=read.integer(
                "SPOOL_MAX_BYTES", 1 << 30, minimum=1 << 10, maximum=1 << 50
            ),
            shutdown_timeout=read.number(
                "SHUTDOWN_TIMEOUT_SECONDS", 10.0, minimum=0.0, maximum=600.0
            ),
        )


@dataclass(frozen=True)
class ApiConfig:
    """Settings of the API (`shortlink api`)."""

    service: ServiceConfig
    host: str
    port: int
    metrics_port: int  # 0: no metrics server
    workers: int
    short_domain: str
    short_url_scheme: str
    max_recipients: int
    max_request_bytes: int
    shutdown_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiConfig:
        read = EnvReader(env)
        short_domain = read.optional_text("SHORT_DOMAIN")
        if short_domain is None:
            raise ConfigError(
                "SHORT_DOMAIN is not set: the public host of the redirect server, "
                "for example tx1.in (short URLs are https://SHORT_DOMAIN/<token>)"
            )
        if "/" in short_domain or " " in short_domain:
            raise ConfigError(f"SHORT_DOMAIN={short_domain!r}: a host (and port), not a URL")
        return cls(
            service=ServiceConfig.from_env(env),
            host=read.text("API_HOST", "127.0.0.1"),
            port=read.integer("API_PORT", 8081, minimum=0, maximum=65_535),
            metrics_port=read.integer("API_METRICS_PORT", 9102, minimum=0, maximum=65_535),
            workers=read.integer("API_WORKERS", os.cpu_count() or 1, minimum=1, maximum=256),
            short_domain=short_domain.lower(),
            short_url_scheme=read.choice("SHORT_URL_SCHEME", "https", ("https", "http")),
            max_recipients=read.integer("MAX_RECIPIENTS", 200_000, minimum=1, maximum=10_000_000),
            max_request_bytes=read.integer(
                "MAX_REQUEST_BYTES", 64 << 20, minimum=1 << 10, maximum=1 << 31
            ),
            shutdown_timeout=read.number(
                "SHUTDOWN_TIMEOUT_SECONDS", 10.0, minimum=0.0, maximum=600.0
            ),
        )
