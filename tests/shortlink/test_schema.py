"""Versioned migrations and the schema check services run at start."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from shortlink import schema
from shortlink.exceptions import SchemaError
from shortlink.serve import EXIT_CONFIG


async def test_migrate_applies_everything_once(empty_database_url: str) -> None:
    """The first run applies every migration; the second applies nothing and changes nothing."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        first = await schema.migrate(conn)
        assert [m.version for m in first] == list(range(1, schema.expected_version() + 1))
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        second = await schema.migrate(conn)
        assert second == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            == tables
        )
        await schema.check_schema(conn)
    finally:
        await conn.close()


async def test_edited_migration_is_refused(empty_database_url: str) -> None:
    """A migration whose text changed after it was applied stops migrate with a clear error."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await schema.migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(SchemaError, match="changed after it was applied"):
            await schema.migrate(conn)
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(empty_database_url: str) -> None:
    """Two migrate runs at the same moment apply each migration exactly once."""
    import asyncio

    conns = [await asyncpg.connect(empty_database_url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(schema.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, schema.expected_version()]
    finally:
        for conn in conns:
            await conn.close()


def test_redirect_server_refuses_to_start_on_a_schema_behind(
    empty_database_url: str, kafka_bootstrap: str
) -> None:
    """`shortlink redirect` on an unmigrated database exits with EX_CONFIG and says why."""
    env = {
        **os.environ,
        "DATABASE_URL": empty_database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    result = subprocess.run(
        [sys.executable, "-m", "shortlink.cli", "redirect", "--workers", "1", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_CONFIG
    assert "run `shortlink migrate` first" in result.stderr


def test_migrate_command_is_idempotent(empty_database_url: str) -> None:
    """`shortlink migrate` twice: the first lists the migrations, the second applies none."""
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    outputs = [
        subprocess.run(
            [sys.executable, "-m", "shortlink.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    assert '"0001_initial"' in outputs[0]
    assert '"applied": []' in outputs[1]
