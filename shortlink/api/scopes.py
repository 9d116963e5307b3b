"""The scope each API route needs: one table, checked by the auth middleware.

Every /v1 route the API serves is in ROUTES (tests/shortlink/api/test_scopes.py
fails for one that is not), and a route missing from it is refused to every key
(fail closed) rather than open to all. PUBLIC routes need no key. HEAD is GET.
What each scope means is in shortlink.accounts.SCOPES.
"""

from __future__ import annotations

from shortlink.accounts import SCOPES

PUBLIC = None  # the route needs no key at all

ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/v1/openapi.json"): PUBLIC,
    ("GET", "/v1/docs"): PUBLIC,
    ("POST", "/v1/links"): "links:write",
    ("GET", "/v1/links"): "links:read",
    ("GET", "/v1/links/{token}"): "links:read",
    ("PATCH", "/v1/links/{token}"): "links:write",
    ("DELETE", "/v1/links/{token}"): "links:write",
    ("POST", "/v1/messages"): "links:write",
    ("POST", "/v1/conversions"): "conversions:write",
    ("GET", "/v1/campaigns"): "stats:read",
    ("GET", "/v1/campaigns/{client_identifier}/stats"): "stats:read",
    ("GET", "/v1/campaigns/{client_identifier}/clicks"): "stats:read",
    ("GET", "/v1/campaigns/{client_identifier}/clicks.csv"): "stats:read",
    ("GET", "/v1/campaigns/{client_identifier}/recipients.csv"): "stats:read",
    ("GET", "/v1/endpoint"): "endpoint:write",
    ("PUT", "/v1/endpoint"): "endpoint:write",
    ("GET", "/v1/deliveries"): "endpoint:write",
    ("POST", "/v1/deliveries/{request_identifier}/retry"): "endpoint:write",
    ("GET", "/v1/keys"): "keys:admin",
    ("POST", "/v1/keys"): "keys:admin",
    ("DELETE", "/v1/keys/{key_id}"): "keys:admin",
    ("POST", "/v1/keys/{key_id}/rotate"): "keys:admin",
    ("GET", "/v1/audit"): "account:admin",
    ("GET", "/v1/account"): "account:admin",
    ("PATCH", "/v1/account"): "account:admin",
    ("POST", "/v1/erasures"): "account:admin",
    ("PATCH", "/v1/campaigns/{client_identifier}"): "links:write",
    # Branded domains change where the account's links answer: account administration.
    ("POST", "/v1/domains"): "account:admin",
    ("GET", "/v1/domains"): "account:admin",
    ("GET", "/v1/domains/{domain}"): "account:admin",
    ("PATCH", "/v1/domains/{domain}"): "account:admin",
    ("DELETE", "/v1/domains/{domain}"): "account:admin",
    ("POST", "/v1/domains/{domain}/verify"): "account:admin",
    ("GET", "/v1/erasures/{erasure_id}"): "account:admin",
}
PUBLIC_PATHS = frozenset(path for (_, path), scope in ROUTES.items() if scope is PUBLIC)

assert all(scope is PUBLIC or scope in SCOPES for scope in ROUTES.values())  # noqa: S101


class NoScope(LookupError):
    """The route is not in ROUTES."""


def required(method: str, route: str) -> str | None:
    """The scope `method route` (a route's canonical pattern) needs, PUBLIC for none, or
    NoScope when the table does not name it."""
    try:
        return ROUTES["GET" if method == "HEAD" else method, route]
    except KeyError:
        raise NoScope(f"{method} {route}") from None
