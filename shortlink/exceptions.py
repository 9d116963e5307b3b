"""Errors raised by the shortlink package.

Every domain error of the package is defined here. Domain errors turn into HTTP
errors only at the edge (the request handlers; HTTP-layer errors live in
shortlink.api.errors); everything else surfaces as a clear message and a non-zero
exit code. The forwarder's own errors (forwarder.exceptions) extend this tree. An
error marked "a ValueError too" (or an OSError) also keeps that standard base, so
code that catches the standard exception, ours or a library's, still sees it.

    ShortlinkError
    ├── ConfigError            a setting is missing or invalid; the service does not start
    ├── SchemaError            the database schema cannot be used
    │   └── SchemaBehindError  migrations are pending; run `shortlink migrate`
    ├── EmbeddedServerError    the local PostgreSQL or broker could not be started
    ├── InvalidInput           a value a client sent cannot be used (a ValueError too)
    ├── NothingToTrack         a message body has no link to track in its mode (a ValueError too)
    ├── InvalidClickEvent      a message on the click topic is not a click event (a ValueError too)
    ├── EndpointError          an endpoint or callback setting cannot be used; `field` names it
    │   └── PrivateAddressError  the endpoint's host resolves to an address that is not public
    ├── SpoolLocked            another process holds the click spool file (an OSError too)
    ├── TokenSpaceExhausted    token generation kept colliding (the token length is too short)
    ├── PartitionError         a time partition of links or clicks cannot be made or read
    ├── LinkNotFound           no link of the account has that token or client_ref
    ├── AmbiguousClientRef     a client_ref names several links where one is needed
    ├── BadCursor              a pagination cursor this service did not make (a ValueError too)
    ├── TooManyKeys            the account has as many working API keys as it may
    ├── DomainTaken            a branded domain is verified by another account (or added here)
    ├── DomainGone             a branded domain was removed while its links were being made
    ├── DnsLookupFailed        a domain's verification record could not be looked up
    ├── TaskFailedError        a background task kept failing; the process must be replaced
    └── ErasureTaken           another runner holds (or finished) an erasure this one ran
"""

from __future__ import annotations


class ShortlinkError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(ShortlinkError):
    """A setting is missing or has a value the service cannot use."""


class PartitionError(ShortlinkError):
    """A time partition of links or clicks cannot be made, or its bounds cannot be read."""


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


# What an operator must fix before a service can start: a restart cannot help, so
# these (and only these) end a service or command with EXIT_CONFIG (shortlink.serve).
STARTUP_ERRORS = (ConfigError, SchemaError, EmbeddedServerError)


class InvalidInput(ShortlinkError, ValueError):
    """A value that cannot be used; the message says why, for the client.

    A ValueError as well, so code that parses with the standard library and ours alike
    catches both the same way.
    """


class NothingToTrack(ShortlinkError, ValueError):
    """The body has no link to track in the chosen mode."""


class InvalidClickEvent(ShortlinkError, ValueError):
    """A message on the click topic that is not a click event this code understands."""


class EndpointError(ShortlinkError):
    """An endpoint setting that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PrivateAddressError(EndpointError):
    """The endpoint's host resolves to an address that is not public."""


class SpoolLocked(ShortlinkError, OSError):
    """Another process holds this spool file (an OSError, as the lock is the file system's)."""


class TokenSpaceExhausted(ShortlinkError):
    """Fresh tokens kept colliding with existing ones."""


class LinkNotFound(ShortlinkError):
    """The account has no link by that token or client_ref."""


class AmbiguousClientRef(ShortlinkError):
    """A client_ref (message id) names more than one of the account's links."""


class BadCursor(ShortlinkError, ValueError):
    """A pagination cursor this service did not make; bad input, so a ValueError as well."""


class TooManyKeys(ShortlinkError):
    """The account has MAX_KEYS_PER_ACCOUNT working API keys already."""


class DomainTaken(ShortlinkError):
    """A branded domain is verified by another account, or already added to this one
    (shortlink.domains)."""


class DomainGone(ShortlinkError):
    """The branded domain new links were to use is no longer a verified domain of the
    account (removed while the request ran)."""


class DnsLookupFailed(ShortlinkError):
    """The resolvers did not answer for a domain's verification record (a timeout, a
    server failure): try again later."""


class TaskFailedError(ShortlinkError):
    """A supervised background task kept failing right after each restart."""

    def __init__(self, task: str) -> None:
        super().__init__(
            f"background task {task!r} cannot recover; stopping so the process is replaced"
        )
        self.task = task


class ErasureTaken(ShortlinkError):
    """Another runner holds an erasure's lease (this one was too slow to renew it), or
    the erasure is not there: this runner stops; the holder carries it on."""

    def __init__(self, erasure_id: int) -> None:
        super().__init__(f"erasure {erasure_id} is run by another runner")
        self.erasure_id = erasure_id
