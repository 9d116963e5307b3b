"""`make run`'s settings: the stack's ports, and what it gives its servers unless told otherwise."""

from __future__ import annotations

import pytest

from shortlink.dev.config import StackConfig
from shortlink.exceptions import ConfigError


def test_defaults_are_a_local_stack() -> None:
    """With nothing set the stack uses the documented ports, short URLs over http on the
    local redirect server, the dashboard on and the loopback trusted as a proxy."""
    config = StackConfig.from_env({})
    assert (config.redirect_port, config.api_port, config.forwarder_port) == (8080, 8081, 8082)
    assert (config.demo_endpoint_port, config.api_metrics_port) == (8083, 9102)
    assert config.short_domain == "127.0.0.1:8080"
    assert config.short_url_scheme == "http"
    assert config.trusted_proxies == "127.0.0.1/32,::1"
    assert config.dashboard_enabled == "true"
    assert config.dashboard_secret is None


def test_the_environment_wins() -> None:
    """Settings given in the environment are passed on as given."""
    config = StackConfig.from_env(
        {
            "REDIRECT_PORT": "9080",
            "FORWARDER_PORT": "9082",
            "SHORT_URL_SCHEME": "https",
            "DASHBOARD_ENABLED": "false",
            "DASHBOARD_SECRET": "s" * 40,
        }
    )
    assert (config.redirect_port, config.forwarder_port) == (9080, 9082)
    assert config.short_domain == "127.0.0.1:9080"
    assert config.short_url_scheme == "https"
    assert config.dashboard_enabled == "false"
    assert config.dashboard_secret == "s" * 40


def test_a_bad_port_stops_the_stack_with_a_clear_message() -> None:
    """A port out of range raises ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="DEMO_ENDPOINT_PORT"):
        StackConfig.from_env({"DEMO_ENDPOINT_PORT": "0"})
