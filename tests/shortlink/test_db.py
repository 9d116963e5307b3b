"""PostgreSQL basics: database URLs, and which failures are worth trying again."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions._base import DataError as ClientDataError

from shortlink.config import ServiceConfig
from shortlink.db import (
    is_statement_error,
    is_transient,
    needs_new_connections,
    require_database_url,
    with_database,
)


def test_with_database_keeps_the_server_and_its_options() -> None:
    """Only the path changes: user, host, port and query options stay."""
    assert (
        with_database("postgresql://u:p@db.example:5433/shortlink?sslmode=require", "other")
        == "postgresql://u:p@db.example:5433/other?sslmode=require"
    )
    assert (
        with_database("postgresql://postgres:@/main?host=/tmp/pg", "test_1")
        == "postgresql://postgres:@/test_1?host=/tmp/pg"
    )


def test_a_service_needs_its_database_url_resolved() -> None:
    """require_database_url answers the URL, or refuses when the CLI has not resolved it."""
    config = ServiceConfig.from_env({"DATABASE_URL": "postgresql://db.example/shortlink"})
    assert require_database_url(config) == "postgresql://db.example/shortlink"
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        require_database_url(ServiceConfig.from_env({}))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (asyncpg.AdminShutdownError, True),
        (asyncpg.CrashShutdownError, True),
        (asyncpg.TooManyConnectionsError, True),
        (asyncpg.QueryCanceledError, True),
        (asyncpg.ReadOnlySQLTransactionError, True),
        (asyncpg.CannotConnectNowError, True),
        (asyncpg.DeadlockDetectedError, True),
        (asyncpg.ConnectionDoesNotExistError, True),
        (asyncpg.InterfaceError, True),
        (asyncpg.LockNotAvailableError, True),
        (asyncpg.SerializationError, True),
        (ConnectionResetError, True),
        (TimeoutError, True),
        (asyncpg.TargetServerAttributeNotMatched, True),  # no primary yet, in a failover
        (ClientDataError, False),  # invalid input for a query argument: some value's fault
        (asyncpg.UniqueViolationError, False),
        (asyncpg.DataError, False),
        (asyncpg.UndefinedColumnError, False),
        (ValueError, False),
    ],
)
def test_which_database_errors_are_worth_retrying(error: type[Exception], transient: bool) -> None:
    """Restarts, failovers, overload and cancellations are transient; data and schema errors not."""
    assert is_transient(error("x")) is transient


@pytest.mark.parametrize(
    ("error", "statement"),
    [
        (asyncpg.UndefinedColumnError, True),  # a migration is missing
        (asyncpg.UndefinedTableError, True),
        (asyncpg.PostgresSyntaxError, True),
        (asyncpg.InsufficientPrivilegeError, True),
        (asyncpg.FeatureNotSupportedError, True),
        (asyncpg.InvalidCatalogNameError, True),
        (asyncpg.CheckViolationError, False),  # some data's fault
        (asyncpg.StringDataRightTruncationError, False),
        (asyncpg.AdminShutdownError, False),
        (OSError, False),
    ],
)
def test_which_errors_blame_the_statement_not_the_data(
    error: type[Exception], statement: bool
) -> None:
    """Syntax, access, unsupported feature and catalog errors say the statement or schema is
    wrong whatever the data; constraint and value errors do not."""
    assert is_statement_error(error("x")) is statement


@pytest.mark.parametrize(
    ("error", "reconnect"),
    [
        (asyncpg.ReadOnlySQLTransactionError, True),  # a failover left us on a standby
        (asyncpg.AdminShutdownError, True),
        (asyncpg.CrashShutdownError, True),
        (asyncpg.CannotConnectNowError, True),
        (asyncpg.DeadlockDetectedError, False),
        (asyncpg.QueryCanceledError, False),
        (ConnectionResetError, False),
    ],
)
def test_which_errors_call_for_new_connections(error: type[Exception], reconnect: bool) -> None:
    """After a shutdown or a failover to a standby the pool connects afresh; not otherwise."""
    assert needs_new_connections(error("x")) is reconnect
