"""Versioned SQL migrations, shared by every service.

Migrations are the files `shortlink/migrations/NNNN_name.sql`, applied in order,
each in its own transaction, and recorded in `schema_migrations` with a checksum.
`migrate()` is safe to run concurrently (an advisory lock serialises runners) and
applying twice is a no-op. Services call `check_schema()` at start and refuse to
run on a database that lacks migrations they need; a database that is *ahead*
(a newer release migrated first, as in a rolling upgrade) is accepted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from shortlink import partitions
from shortlink.db import Connection
from shortlink.exceptions import SchemaBehindError, SchemaError

# Arbitrary constant: the key of the advisory lock that serialises migrations.
_MIGRATION_LOCK_KEY = 0x5EED_11C4
_PARTITIONED = 12  # the migration that partitions links and clicks
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """All migrations shipped with this code, in version order."""
    found = []
    for entry in (resources.files("shortlink") / "migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migration versions must be 1..n without gaps, found {versions}")
    return found


def expected_version() -> int:
    """The schema version this code needs."""
    return len(load_migrations())


async def _ensure_table(conn: Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text        NOT NULL,
            checksum   text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


async def migrate(conn: Connection) -> list[Migration]:
    """Apply the pending migrations in order, then make the time partitions needed now
    and ahead (shortlink.partitions); return the migrations applied."""
    migrations = load_migrations()
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await _ensure_table(conn)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise SchemaError(
                        f"migration {migration.version} ({migration.name}) was changed after "
                        "it was applied; add a new migration instead of editing an old one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration)
        if migrations and migrations[-1].version >= _PARTITIONED:
            await partitions.ensure(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now


async def applied_version(conn: Connection) -> int:
    """Highest applied migration version (0 for an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    return int(version)


async def check_schema(conn: Connection) -> None:
    """Raise SchemaBehindError unless every migration this code ships is applied."""
    applied = await applied_version(conn)
    expected = expected_version()
    if applied < expected:
        raise SchemaBehindError(applied, expected)
