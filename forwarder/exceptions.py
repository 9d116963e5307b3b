"""Errors raised by the forwarder package.

They extend the tree of shortlink.exceptions (the forwarder is a service of the
same product): a `shortlink` or `forwarder` command that catches ShortlinkError
catches these too.

    ShortlinkError               (shortlink.exceptions)
    ├── LeaseLost                this process no longer holds an endpoint's lease
    └── RefusedAddress           an endpoint resolved to an address we must not connect to
                                 (an OSError too, so aiohttp reports it as a connection error)
"""

from __future__ import annotations

from shortlink.exceptions import ShortlinkError


class LeaseLost(ShortlinkError):
    """This process no longer holds the endpoint's lease: stop sending to it."""


class RefusedAddress(ShortlinkError, OSError):
    """The endpoint resolved to an address we must not connect to.

    An OSError as well: raised inside aiohttp's resolver, it must reach the attempt as
    a connection error (aiohttp wraps an OSError from a resolver, nothing else).
    """
