"""The settings of `shortlink dev` (`make run`), read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shortlink.config import EnvReader, ServiceConfig
from shortlink.redirect.config import RedirectConfig


@dataclass(frozen=True)
class StackConfig:
    """Where the local stack's servers listen, and the settings it gives them unless
    the environment sets them (local short URLs over http on the local redirect
    server, the dashboard on, a local curl trusted as the load balancer)."""

    service: ServiceConfig
    redirect_port: int
    redirect_metrics_port: int
    api_port: int
    api_metrics_port: int
    forwarder_port: int
    demo_endpoint_port: int
    short_domain: str
    short_url_scheme: str
    trusted_proxies: str
    dashboard_enabled: str
    dashboard_secret: str | None  # None: the one kept in the data folder

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackConfig:
        read = EnvReader(env)
        redirect = RedirectConfig.from_env(env)
        return cls(
            service=ServiceConfig.from_env(env),
            redirect_port=redirect.port,
            redirect_metrics_port=redirect.metrics_port,
            api_port=read.integer("API_PORT", 8081, minimum=1, maximum=65_535),
            api_metrics_port=read.integer("API_METRICS_PORT", 9102, minimum=0, maximum=65_535),
            forwarder_port=read.integer("FORWARDER_PORT", 8082, minimum=1, maximum=65_535),
            demo_endpoint_port=read.integer("DEMO_ENDPOINT_PORT", 8083, minimum=1, maximum=65_535),
            # The servers check these values; the stack passes them on as written.
            short_domain=read.text("SHORT_DOMAIN", f"127.0.0.1:{redirect.port}"),
            short_url_scheme=read.text("SHORT_URL_SCHEME", "http"),
            trusted_proxies=read.text("TRUSTED_PROXIES", "127.0.0.1/32,::1"),
            dashboard_enabled=read.text("DASHBOARD_ENABLED", "true"),
            dashboard_secret=read.optional_text("DASHBOARD_SECRET"),
        )
