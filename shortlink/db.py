"""PostgreSQL basics every module shares: connection types and database URLs.

The pool a service runs on lives in shortlink.pool; the schema and its
migrations in shortlink.schema (which imports this module, never the reverse).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shortlink.config import ServiceConfig

# A connection of our own or one borrowed from a pool: queries take either.
Connection = asyncpg.Connection | PoolConnectionProxy
# What a single read can run on: a connection, or the pool (which lends one).
Executor = Connection | asyncpg.Pool


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def require_database_url(config: ServiceConfig) -> str:
    """The database URL; the CLI fills it in (embedded server) before services start."""
    if config.database_url is None:
        raise RuntimeError("DATABASE_URL must be resolved before a service starts")
    return config.database_url


# SQLSTATE classes of failures that pass: connection exception, transaction rollback
# (serialization, deadlock), insufficient resources (too many connections, disk
# full), operator intervention (admin or crash shutdown, cannot connect now, query
# canceled), system error (I/O).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# A read-only transaction: a failover left us on a standby; lock not available.
_TRANSIENT_STATES = frozenset({"25006", "55P03"})
# Errors after which the pool's connections should be made again (they may point
# at a server that is gone or is now a standby).
_RECONNECT_STATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def is_transient(exc: BaseException) -> bool:
    """Whether a database operation that raised `exc` is worth trying again as it was."""
    if isinstance(exc, asyncpg.InterfaceError):
        # A lost or busy connection; but not asyncpg's client-side "invalid input for
        # query argument" (a ValueError too), which some value caused.
        return not isinstance(exc, ValueError)
    # No host of a multi-host URL is what target_session_attrs asks for: during a failover.
    if isinstance(exc, OSError | TimeoutError | asyncpg.TargetServerAttributeNotMatched):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    return False


# SQLSTATE classes that say the statement or the database is wrong, whatever the
# data: syntax error or access rule violation (an undefined column: a migration is
# missing), feature not supported, invalid SQL statement name, invalid
# authorization, invalid catalog or schema name. Values always travel as
# parameters, so no event can cause these.
_STATEMENT_CLASSES = frozenset({"42", "0A", "26", "28", "3D", "3F"})


def is_statement_error(exc: BaseException) -> bool:
    """Whether `exc` says the statement or the schema is wrong rather than some data
    (retrying the same data alone would fail the same way for every batch)."""
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _STATEMENT_CLASSES


def needs_new_connections(exc: BaseException) -> bool:
    """Whether, after `exc`, the pool should drop its connections and connect afresh."""
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "") in _RECONNECT_STATES
