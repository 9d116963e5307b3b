"""The forwarder and endpoint commands as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import aiohttp
import orjson

from forwarder.app import create_app
from forwarder.config import ForwarderConfig
from shortlink.serve import EXIT_CONFIG
from tests.infra import running, shortlink, wait_until


def test_endpoint_set_show_and_refusals(database_url: str, account_id: int) -> None:
    """`shortlink endpoint set` stores a valid endpoint, shows it, and refuses bad ones with 2."""
    env = {"DATABASE_URL": database_url, "ALLOW_PRIVATE_ENDPOINTS": "true"}
    stored = shortlink(
        env,
        "endpoint",
        "set",
        "--account",
        str(account_id),
        "--url",
        "http://127.0.0.1:9/h",
        "--format",
        "xml",
        "--mode",
        "first",
    )
    assert stored.returncode == 0, stored.stderr
    shown = orjson.loads(shortlink(env, "endpoint", "show", "--account", str(account_id)).stdout)
    assert shown["url"] == "http://127.0.0.1:9/h"
    assert (shown["format"], shown["mode"], shown["secret_set"]) == ("xml", "first", False)
    refused = shortlink(
        {"DATABASE_URL": database_url},
        "endpoint",
        "set",
        "--account",
        str(account_id),
        "--url",
        "http://127.0.0.1:9/h",
    )
    assert refused.returncode == 2
    assert "ALLOW_PRIVATE_ENDPOINTS" in refused.stderr
    bad = shortlink(env, "endpoint", "set", "--account", str(account_id), "--url", "ftp://x/")
    assert bad.returncode == 2
    assert "url: must start with https://" in bad.stderr
    secret = shortlink(
        env,
        "endpoint",
        "set",
        "--account",
        str(account_id),
        "--url",
        "http://127.0.0.1:9/h",
        "--secret",
        "whsec_tooshort",
    )
    assert secret.returncode == 2
    assert "secret" in secret.stderr


def test_deliveries_commands(database_url: str, account_id: int) -> None:
    """`deliveries list` prints JSON and `deliveries retry` says how many it requeued."""
    env = {"DATABASE_URL": database_url}
    listed = shortlink(env, "deliveries", "list", "--account", str(account_id), "--status", "dead")
    assert listed.returncode == 0
    assert orjson.loads(listed.stdout) == []
    retried = shortlink(env, "deliveries", "retry", "--account", str(account_id))
    assert orjson.loads(retried.stdout) == {"account_id": account_id, "requeued": 0}


def test_forwarder_refuses_a_schema_behind(empty_database_url: str, kafka_bootstrap: str) -> None:
    """`forwarder run` on an unmigrated database exits with EX_CONFIG and says why."""
    result = subprocess.run(
        [sys.executable, "-m", "forwarder.cli", "run", "--port", "0"],
        env={
            **os.environ,
            "DATABASE_URL": empty_database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_CONFIG
    assert "run `shortlink migrate` first" in result.stderr


async def test_health_and_readiness(forwarder_env: dict[str, str]) -> None:
    """/healthz answers at once; /readyz once the database answers and the consumer runs."""
    async with (
        running(create_app(ForwarderConfig.from_env(forwarder_env))) as server,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{server.url}/healthz") as health:
            assert health.status == 200
        body: object = None

        async def ready() -> bool:
            nonlocal body
            async with session.get(f"{server.url}/readyz") as response:
                body = await response.json()
                return response.status == 200

        await wait_until(ready, step=0.1, what="/readyz answering 200")
        assert body == {"database": "ok", "consumer": "ok"}
