"""The API's settings (`shortlink api`), read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shortlink.config import EnvReader, IPNetwork, ServiceConfig
from shortlink.domains import Nameserver, parse_resolvers
from shortlink.exceptions import ConfigError, InvalidInput

MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class PublicAddresses:
    """Where the API and its short URLs are reached: the settings that the API, its
    dashboard and the `shortlink` commands share, read here once for all of them."""

    short_domain: str | None  # lower case; the API itself requires it (ApiConfig)
    short_url_scheme: str
    api_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PublicAddresses:
        read = EnvReader(env)
        short_domain = read.optional_text("SHORT_DOMAIN")
        if short_domain is not None and ("/" in short_domain or " " in short_domain):
            raise ConfigError(f"SHORT_DOMAIN={short_domain!r}: a host (and port), not a URL")
        if short_domain is not None and not _port_ok(short_domain):
            raise ConfigError(f"SHORT_DOMAIN={short_domain!r}: its port must be 1 to 65535")
        return cls(
            short_domain=None if short_domain is None else short_domain.lower(),
            short_url_scheme=read.choice("SHORT_URL_SCHEME", "https", ("https", "http")),
            api_port=read.integer("API_PORT", 8081, minimum=0, maximum=65_535),
        )


def _port_ok(short_domain: str) -> bool:
    """Whether the port SHORT_DOMAIN names, if any, is a number from 1 to 65535."""
    host_end = short_domain.rfind("]") + 1  # an IPv6 literal: [::1]:8080
    _, colon, port = short_domain[host_end:].rpartition(":")
    if not colon:
        return True
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65_535


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of the dashboard pages (shortlink.api.dashboard) and `shortlink dashboard-link`."""

    enabled: bool
    secret: str | None  # signs session cookies and dashboard links; required when enabled
    cookie_secure: bool
    public_url: str  # where the API is reached from a browser, for dashboard links
    refresh_seconds: int

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        addresses: PublicAddresses | None = None,
        *,
        require_secret: bool = False,
    ) -> DashboardConfig:
        """The dashboard's settings; `addresses` when the caller has read them already."""
        read = EnvReader(env)
        if addresses is None:
            addresses = PublicAddresses.from_env(env)
        enabled = read.flag("DASHBOARD_ENABLED", False)
        secret = read.optional_text("DASHBOARD_SECRET")
        if secret is None and (enabled or require_secret):
            raise ConfigError(
                "DASHBOARD_SECRET is not set: a random string of at least "
                f"{MIN_SECRET_LENGTH} characters that signs dashboard sessions and links "
                "(for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"DASHBOARD_SECRET: {len(secret)} characters, at least {MIN_SECRET_LENGTH} needed"
            )
        https = addresses.short_url_scheme == "https"
        public_url = read.text(
            "DASHBOARD_PUBLIC_URL", f"http://127.0.0.1:{addresses.api_port}"
        ).rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise ConfigError(f"DASHBOARD_PUBLIC_URL={public_url!r}: an http(s) URL")
        return cls(
            enabled=enabled,
            secret=secret,
            cookie_secure=read.flag("DASHBOARD_COOKIE_SECURE", https),
            public_url=public_url,
            refresh_seconds=read.integer("DASHBOARD_REFRESH_SECONDS", 10, minimum=1, maximum=3600),
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
    max_links_per_request: int
    max_request_bytes: int
    max_response_bytes: int
    shutdown_timeout: float
    dashboard: DashboardConfig
    rate_limit_per_minute: int  # per key, unless its account sets its own
    # Proxies whose X-Forwarded-For names the client (the audit log's address), as for the
    # redirect server (shortlink.clientip).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Where POST /v1/domains/{domain}/verify asks for TXT records (empty: the system's).
    dns_resolvers: tuple[Nameserver, ...] = ()
    dns_timeout: float = 5.0
    # How long POST /v1/erasures works before it answers 202 and leaves the rest to the
    # erasure job (shortlink.erasures): well under a client's timeout and the pool's 60 s.
    erasure_budget: float = 10.0
    # How long a request's key (or dashboard session) check waits for the primary. Then a
    # route that only reads (READ_POOL) checks it on DATABASE_READ_URL, anything else is a
    # 503: a primary cut off answers nothing, and would hold every request for the pool's
    # 60 s command timeout.
    key_check_timeout: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiConfig:
        read = EnvReader(env)
        addresses = PublicAddresses.from_env(env)
        if addresses.short_domain is None:
            raise ConfigError(
                "SHORT_DOMAIN is not set: the public host of the redirect server, "
                "for example tx1.in (short URLs are https://SHORT_DOMAIN/<token>)"
            )
        return cls(
            service=ServiceConfig.from_env(env),
            host=read.text("API_HOST", "127.0.0.1"),
            port=addresses.api_port,
            metrics_port=read.integer("API_METRICS_PORT", 9102, minimum=0, maximum=65_535),
            workers=read.integer("API_WORKERS", os.cpu_count() or 1, minimum=1, maximum=256),
            short_domain=addresses.short_domain,
            short_url_scheme=addresses.short_url_scheme,
            max_recipients=read.integer("MAX_RECIPIENTS", 200_000, minimum=1, maximum=10_000_000),
            # Links one links or messages request may create (directives x recipients):
            # far above a real campaign, far below a transaction that never ends.
            max_links_per_request=read.integer(
                "MAX_LINKS_PER_REQUEST", 1_000_000, minimum=1, maximum=100_000_000
            ),
            max_request_bytes=read.integer(
                "MAX_REQUEST_BYTES", 64 << 20, minimum=1 << 10, maximum=1 << 31
            ),
            # What one links or messages request may make, counted before it is made: a
            # 200,000-recipient campaign of 470-character messages answers about 140 MB; the
            # answer is kept whole in memory (and in PostgreSQL under an Idempotency-Key,
            # whose bytea holds at most 1 GiB).
            max_response_bytes=read.integer(
                "MAX_RESPONSE_BYTES", 256 << 20, minimum=1 << 10, maximum=1 << 30
            ),
            shutdown_timeout=read.number(
                "SHUTDOWN_TIMEOUT_SECONDS", 10.0, minimum=0.0, maximum=600.0
            ),
            dashboard=DashboardConfig.from_env(env, addresses),
            # Requests, not recipients, are counted: one request makes a whole campaign.
            rate_limit_per_minute=read.integer(
                "API_RATE_LIMIT_PER_MINUTE", 1200, minimum=1, maximum=1_000_000
            ),
            trusted_proxies=read.networks("TRUSTED_PROXIES"),
            dns_resolvers=_resolvers(read.text("DNS_RESOLVERS", "")),
            dns_timeout=read.number("DNS_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=60.0),
            erasure_budget=read.number("ERASURE_BUDGET_SECONDS", 10.0, minimum=0.0, maximum=50.0),
            key_check_timeout=read.number(
                "KEY_CHECK_TIMEOUT_SECONDS", 2.0, minimum=0.1, maximum=60.0
            ),
        )


def _resolvers(text: str) -> tuple[Nameserver, ...]:
    try:
        return parse_resolvers(text)
    except InvalidInput as exc:
        raise ConfigError(f"DNS_RESOLVERS: {exc}") from None
