"""Configuration from the environment: defaults and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortlink.exceptions import ConfigError
from shortlink.redirect.config import RedirectConfig


def test_defaults() -> None:
    """An empty environment gives the documented defaults."""
    config = RedirectConfig.from_env({})
    assert (config.host, config.port, config.redirect_status) == ("127.0.0.1", 8080, 302)
    assert config.service.database_url is None
    assert config.service.click_topic == "clicks"
    assert config.publish_linger == 0.05
    assert config.spool_dir == Path(".data").absolute() / "spool"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIRECT_STATUS": "303"}, "REDIRECT_STATUS=303"),
        ({"REDIRECT_STATUS": "abc"}, "expected an integer"),
        ({"LINK_CACHE_ENTRIES": "0"}, "between 1 and"),
        ({"NEGATIVE_CACHE_TTL_SECONDS": "x"}, "expected a number"),
        ({"TRUSTED_PROXIES": "10.0.0.0/8, nonsense"}, "not an IP address or CIDR"),
        ({"LOG_LEVEL": "LOUD"}, "expected one of"),
        ({"TOKEN_LENGTH": "5"}, "between 6 and 8"),
    ],
)
def test_invalid_values_stop_with_a_clear_message(env: dict[str, str], message: str) -> None:
    """A bad setting raises ConfigError naming the variable and what is wrong."""
    with pytest.raises(ConfigError, match=message):
        RedirectConfig.from_env(env)


def test_values_are_read() -> None:
    """Settings given in the environment are used."""
    config = RedirectConfig.from_env(
        {"REDIRECT_STATUS": "308", "TRUSTED_PROXIES": "10.0.0.0/8,::1", "PUBLISH_LINGER_MS": "0"}
    )
    assert config.redirect_status == 308
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8", "::1/128"]
    assert config.publish_linger == 0
