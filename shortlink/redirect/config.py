"""The redirect server's settings (`shortlink redirect`), read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from shortlink import domains
from shortlink.config import EnvReader, IPNetwork, ServiceConfig
from shortlink.exceptions import ConfigError

REDIRECT_STATUSES = (301, 302, 307, 308)


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
    warm_on_create: bool
    warm_window: timedelta
    negative_cache_entries: int
    negative_cache_ttl: float
    trusted_proxies: tuple[IPNetwork, ...]
    scan_limit_per_minute: int  # unknown tokens per client address (shortlink.redirect.scanners)
    publish_buffer_events: int
    publish_linger: float
    kafka_request_timeout: float
    spool_dir: Path
    spool_max_bytes: int
    shutdown_timeout: float
    publish_journal_bytes: int = 16 << 20  # 0: no journal (shortlink.redirect.journal)
    # The TLS terminator's "may I get a certificate for this host?" endpoint
    # (shortlink.redirect.tlsask): its own listener, off (0) unless set, on the loopback
    # address unless set, never the public port.
    tls_ask_host: str = "127.0.0.1"
    tls_ask_port: int = 0
    short_domain: str | None = None  # SHORT_DOMAIN, which the ask endpoint allows too
    # Other names SHORT_DOMAIN links answer on (internal service names), lower case.
    short_domain_aliases: frozenset[str] = frozenset()

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
            warm_on_create=read.flag("WARM_ON_CREATE", True),
            warm_window=timedelta(
                seconds=read.duration("WARM_WINDOW", 6 * 3600, minimum=0, maximum=90 * 86400)
            ),
            negative_cache_entries=read.integer(
                "NEGATIVE_CACHE_ENTRIES", 100_000, minimum=1, maximum=10**9
            ),
            negative_cache_ttl=read.number(
                "NEGATIVE_CACHE_TTL_SECONDS", 5.0, minimum=0.0, maximum=3600.0
            ),
            trusted_proxies=read.networks("TRUSTED_PROXIES"),
            scan_limit_per_minute=read.integer(
                "SCAN_LIMIT_PER_MINUTE", 120, minimum=0, maximum=1_000_000
            ),
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
            publish_journal_bytes=read.integer(
                "PUBLISH_JOURNAL_BYTES", 16 << 20, minimum=0, maximum=1 << 34
            ),
            tls_ask_host=read.text("TLS_ASK_HOST", "127.0.0.1"),
            tls_ask_port=read.integer("TLS_ASK_PORT", 0, minimum=0, maximum=65_535),
            short_domain=read.optional_text("SHORT_DOMAIN"),
            short_domain_aliases=frozenset(
                domains.host_of(name) for name in read.names("SHORT_DOMAIN_ALIASES")
            ),
        )

    def short_names(self) -> frozenset[str] | None:
        """The names SHORT_DOMAIN links answer on besides addresses; None: any name."""
        if self.short_domain is None:
            return None
        return self.short_domain_aliases | {domains.host_of(self.short_domain)}
