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
