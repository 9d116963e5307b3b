"""The API's settings: the addresses the API, its dashboard and the commands share."""

from __future__ import annotations

import pytest

from shortlink.api.config import ApiConfig, DashboardConfig, PublicAddresses
from shortlink.exceptions import ConfigError


def test_public_addresses_are_read_once_for_the_api_and_its_dashboard() -> None:
    """API_PORT and SHORT_URL_SCHEME set the API's port and scheme and the dashboard's
    default public URL and cookie flag alike."""
    env = {"SHORT_DOMAIN": "Tx1.IN", "SHORT_URL_SCHEME": "http", "API_PORT": "9081"}
    config = ApiConfig.from_env(env)
    assert (config.short_domain, config.short_url_scheme, config.port) == ("tx1.in", "http", 9081)
    assert config.dashboard.public_url == "http://127.0.0.1:9081"
    assert config.dashboard.cookie_secure is False
    assert DashboardConfig.from_env(env) == config.dashboard


def test_short_domain_is_optional_for_the_commands_and_required_by_the_api() -> None:
    """Without SHORT_DOMAIN the addresses have none; the API refuses to start."""
    assert PublicAddresses.from_env({}).short_domain is None
    with pytest.raises(ConfigError, match="SHORT_DOMAIN is not set"):
        ApiConfig.from_env({})


def test_a_short_domain_that_is_a_url_is_refused() -> None:
    """SHORT_DOMAIN is a host (and port): a scheme or a path is a ConfigError."""
    with pytest.raises(ConfigError, match="not a URL"):
        PublicAddresses.from_env({"SHORT_DOMAIN": "https://tx1.in"})
