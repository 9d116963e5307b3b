"""The forwarder's settings: defaults, and the lease rule that keeps one sender per endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.config import ForwarderConfig
from forwarder.recorder import FETCH_MIN_BYTES, consumer_settings
from shortlink.exceptions import ConfigError


def test_delivery_defaults() -> None:
    """An empty environment gives the documented delivery defaults."""
    config = ForwarderConfig.from_env({})
    assert (config.timeout, config.lease, config.max_attempts) == (10.0, 30.0, 10)


@pytest.mark.parametrize(
    ("env", "lease"),
    [
        ({"DELIVERY_TIMEOUT_SECONDS": "15"}, 30.0),
        ({"DELIVERY_TIMEOUT_SECONDS": "45", "DELIVERY_LEASE_SECONDS": "90"}, 90.0),
        ({"DELIVERY_TIMEOUT_SECONDS": "0.5", "DELIVERY_LEASE_SECONDS": "1"}, 1.0),
    ],
)
def test_a_timeout_within_half_the_lease_is_accepted(env: dict[str, str], lease: float) -> None:
    """A request timeout of at most half the lease is a valid configuration."""
    assert ForwarderConfig.from_env(env).lease == lease


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DELIVERY_TIMEOUT_SECONDS": "16"}, "DELIVERY_LEASE_SECONDS to 32 or more"),
        ({"DELIVERY_TIMEOUT_SECONDS": "90"}, "at most half of DELIVERY_LEASE_SECONDS=30"),
        ({"DELIVERY_TIMEOUT_SECONDS": "10", "DELIVERY_LEASE_SECONDS": "10"}, "at most half"),
        ({"DELIVERY_LEASE_SECONDS": "0.5"}, "DELIVERY_LEASE_SECONDS"),
        ({"DELIVERY_LEASE_SECONDS": "soon"}, "expected a number"),
    ],
)
def test_a_timeout_the_lease_cannot_cover_is_refused(env: dict[str, str], message: str) -> None:
    """A request that could outlive the lease it was sent under stops the forwarder at start."""
    with pytest.raises(ConfigError, match=message):
        ForwarderConfig.from_env(env)


def test_geoip_database_must_be_a_maxmind_db(tmp_path: Path, city_database: Path) -> None:
    """GEOIP_DATABASE names a readable .mmdb: a missing or foreign file stops the start."""
    base: dict[str, str] = {}
    assert ForwarderConfig.from_env(base).geoip_database is None
    config = ForwarderConfig.from_env({**base, "GEOIP_DATABASE": str(city_database)})
    assert config.geoip_database == city_database
    with pytest.raises(ConfigError, match="no such file"):
        ForwarderConfig.from_env({**base, "GEOIP_DATABASE": str(tmp_path / "missing.mmdb")})
    foreign = tmp_path / "foreign.mmdb"
    foreign.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a MaxMind DB"):
        ForwarderConfig.from_env({**base, "GEOIP_DATABASE": str(foreign)})


def test_group_membership_defaults_and_static_ids() -> None:
    """By default a forwarder is a dynamic member with a 6 s session; FORWARDER_INSTANCE_ID
    makes it a static one, and each worker of several gets its own id from it."""
    config = ForwarderConfig.from_env({})
    assert (config.instance_id, config.session_timeout) == (None, 6.0)
    assert config.worker(1) is config
    single = ForwarderConfig.from_env({"FORWARDER_INSTANCE_ID": "forwarder-7f9c-abcde"})
    assert single.worker(0).instance_id == "forwarder-7f9c-abcde"
    several = ForwarderConfig.from_env(
        {"FORWARDER_INSTANCE_ID": "pod.a_1", "FORWARDER_WORKERS": "3"}
    )
    assert [several.worker(i).instance_id for i in range(3)] == [
        "pod.a_1-0",
        "pod.a_1-1",
        "pod.a_1-2",
    ]


@pytest.mark.parametrize(
    "value", ["has space", "naïve", "a/b", "x" * 201, "\x00", "i\nd", "🙂", "a;b", "%41"]
)
def test_a_bad_instance_id_stops_the_start(value: str) -> None:
    """An id Kafka would refuse, or an odd or huge one, is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="FORWARDER_INSTANCE_ID"):
        ForwarderConfig.from_env({"FORWARDER_INSTANCE_ID": value})


def test_the_consume_linger_holds_fetches_on_the_broker() -> None:
    """CONSUME_LINGER_MS (250 by default, 1 to 5000) is how long the broker may hold a
    fetch to gather click events, up to FETCH_MIN_BYTES."""
    settings = consumer_settings(ForwarderConfig.from_env({}))
    assert (settings["fetch_max_wait_ms"], settings["fetch_min_bytes"]) == (250, FETCH_MIN_BYTES)
    config = ForwarderConfig.from_env({"CONSUME_LINGER_MS": "40"})
    assert consumer_settings(config)["fetch_max_wait_ms"] == 40
    for value in ("0", "5001", "soon"):
        with pytest.raises(ConfigError, match="CONSUME_LINGER_MS"):
            ForwarderConfig.from_env({"CONSUME_LINGER_MS": value})
