"""Configuration shared by every service: the environment reader and ServiceConfig.

Each service has one frozen dataclass, read once from the environment in its
entry point: RedirectConfig (shortlink.redirect.config), ApiConfig
(shortlink.api.config, with PublicAddresses, which the API, its dashboard and the
`shortlink` commands share), ForwarderConfig (forwarder.config), and StackConfig
(shortlink.dev.config) for `make run`. Every setting is read in one of those five
modules and nowhere else; docs/configuration.md lists them all (a test keeps the
two equal). An invalid value raises ConfigError naming the variable, so a service
refuses to start instead of guessing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shortlink import tokens
from shortlink.exceptions import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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

    def duration(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """Seconds, written as a number of seconds or with a unit: 90s, 30m, 6h, 2d."""
        value = self.raw(name)
        if value is None:
            return default
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        number, unit = (value[:-1], units[value[-1]]) if value[-1] in units else (value, 1)
        try:
            seconds = float(number) * unit
        except ValueError:
            raise ConfigError(
                f"{name}={value!r}: expected a duration such as 90s, 30m or 6h"
            ) from None
        if not minimum <= seconds <= maximum:
            raise ConfigError(f"{name}={value}: must be between {minimum:g} and {maximum:g} s")
        return seconds

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

    def names(self, name: str) -> tuple[str, ...]:
        """A comma-separated list, each item stripped, empty items left out."""
        value = self.raw(name)
        if value is None:
            return ()
        return tuple(item for item in (part.strip() for part in value.split(",")) if item)

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        networks = []
        for item in self.names(name):
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
    endpoint_dns_timeout: float = 5.0  # seconds to resolve an endpoint's or callback's host
    # A replica for the statistics, dashboard and CSV reads (shortlink.pool.READ_POOL);
    # None: they read the primary (database_url) like everything else.
    database_read_url: str | None = None

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
            endpoint_dns_timeout=read.number(
                "ENDPOINT_DNS_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=60.0
            ),
            database_read_url=read.optional_text("DATABASE_READ_URL"),
        )
