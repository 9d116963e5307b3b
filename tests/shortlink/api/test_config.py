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


@pytest.mark.parametrize(
    "short_domain", ["tx1.in:abc", "tx1.in:²", "tx1.in:0", "tx1.in:65536", "[::1]:x"]
)
def test_a_short_domain_port_that_is_not_a_port_is_refused(short_domain: str) -> None:
    """A port in SHORT_DOMAIN must be ASCII digits from 1 to 65535: else a ConfigError."""
    with pytest.raises(ConfigError, match="port"):
        PublicAddresses.from_env({"SHORT_DOMAIN": short_domain})


@pytest.mark.parametrize("short_domain", ["tx1.in", "tx1.in:8080", "[::1]", "[::1]:8080"])
def test_a_short_domain_with_or_without_a_port_is_taken(short_domain: str) -> None:
    """A host, an IPv6 literal, with or without a valid port, is a SHORT_DOMAIN."""
    assert PublicAddresses.from_env({"SHORT_DOMAIN": short_domain}).short_domain == short_domain
