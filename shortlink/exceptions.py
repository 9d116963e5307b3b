"""Errors raised by the shortlink package.

Domain errors turn into HTTP errors only at the edge (the request handlers);
everything else surfaces as a clear message and a non-zero exit code.

    ShortlinkError
    ├── ConfigError            a setting is missing or invalid; the service does not start
    ├── SchemaError            the database schema cannot be used
    │   └── SchemaBehindError  migrations are pending; run `shortlink migrate`
    ├── EmbeddedServerError    the local PostgreSQL or broker could not be started
    ├── TokenSpaceExhausted    token generation kept colliding (the token length is too short)
    ├── LinkNotFound           no link of the account has that token or client_ref
    ├── AmbiguousClientRef     a client_ref names several links where one is needed
    ├── BadCursor              a pagination cursor this service did not make (a ValueError too)
    └── TaskFailedError        a background task kept failing; the process must be replaced
"""

from __future__ import annotations


class ShortlinkError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ShortlinkError):
    """A setting is missing or has a value the service cannot use."""


class SchemaError(ShortlinkError):
    """The database schema is not what this code expects."""


class SchemaBehindError(SchemaError):
    """The database lacks migrations this code needs."""

    def __init__(self, applied: int, expected: int) -> None:
        super().__init__(
            f"database schema is at version {applied}, this code needs {expected}: "
            "run `shortlink migrate` first"
        )
        self.applied = applied
        self.expected = expected


class EmbeddedServerError(ShortlinkError):
    """A local development server (PostgreSQL or the Kafka-protocol broker) failed."""


class TokenSpaceExhausted(ShortlinkError):
    """Fresh tokens kept colliding with existing ones."""


class LinkNotFound(ShortlinkError):
    """The account has no link by that token or client_ref."""


class AmbiguousClientRef(ShortlinkError):
    """A client_ref (message id) names more than one of the account's links."""


class BadCursor(ShortlinkError, ValueError):
    """A pagination cursor this service did not make; bad input, so a ValueError as well."""


class TaskFailedError(ShortlinkError):
    """A supervised background task kept failing right after each restart."""

    def __init__(self, task: str) -> None:
        super().__init__(
            f"background task {task!r} cannot recover; stopping so the process is replaced"
        )
        self.task = task
