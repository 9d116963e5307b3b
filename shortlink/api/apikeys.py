"""/v1/keys: an account's named, scoped, expiring API keys (scope keys:admin).

The secret is in the answer of the create and rotate routes only; listings show
its prefix. Every change is in the audit log (shortlink.audit), made in the same
transaction. The dashboard's keys page goes through the same functions
(`create`, `revoke`), so both check and record alike.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from shortlink import accounts, audit
from shortlink.accounts import SCOPES, NewKey
from shortlink.api.auth import ACCOUNT_ID, KEY_ID, client_address
from shortlink.api.auth import SCOPES as HELD
from shortlink.api.body import Fields, Problems, json_object
from shortlink.api.errors import ApiError, not_found
from shortlink.conversions import OCCURRED_AT_PATTERN
from shortlink.db import Connection
from shortlink.exceptions import TooManyKeys
from shortlink.pool import POOL

_TIME = re.compile(OCCURRED_AT_PATTERN)
MAX_LIFETIME = timedelta(days=3650)
_KEY_ID = re.compile(r"[1-9][0-9]{0,17}")


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


def _expiry(raw: str) -> str:
    """An expiry as given (checked: an RFC 3339 time from now to ten years ahead)."""
    now = datetime.now(UTC)
    if _TIME.fullmatch(raw) is None:
        raise ValueError("must be an RFC 3339 date-time with its offset, e.g. 2027-01-01T00:00:00Z")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"is not a date-time ({exc})") from None
    if moment <= now:
        raise ValueError("must be in the future")
    if moment > now + MAX_LIFETIME:
        raise ValueError("must be at most ten years from now")
    return raw


def checked_key_request(data: Mapping[str, Any]) -> tuple[str, list[str], datetime | None]:
    """name, scopes and expiry of a new key from a JSON body or a form, or a 422."""
    problems = Problems()
    fields = Fields(data, problems, allowed={"name", "scopes", "expires_at"})
    name = fields.text("name", required=True, min_length=1, max_length=accounts.MAX_KEY_NAME)
    scopes = fields.texts("scopes", max_items=len(SCOPES), max_length=40)
    if scopes is None:
        if not fields.has("scopes"):
            problems.add("scopes", "is required")
    elif not scopes:
        problems.add("scopes", "must name at least one scope")
    else:
        for index, scope in enumerate(scopes):
            if scope not in SCOPES:
                problems.add(f"scopes[{index}]", f"must be one of {', '.join(SCOPES)}")
    expires = fields.converted("expires_at", fields.text("expires_at", max_length=40), _expiry)
    problems.check()
    return (
        name or "",
        list(scopes or []),
        None if expires is None else datetime.fromisoformat(expires),
    )


def check_granted(scopes: Collection[str], held: frozenset[str]) -> None:
    """403 unless the caller holds every scope of the key it makes, rotates or revokes: a
    keys:admin key cannot give itself, or take from a stronger key, what it lacks."""
    missing = [scope for scope in accounts.SCOPES if scope in scopes and scope not in held]
    if missing:
        raise ApiError(
            403,
            "missing_scope",
            "a key can make, rotate or revoke only keys whose scopes it holds itself; "
            f"this one lacks {', '.join(missing)}",
            details=[{"field": "scope", "message": scope} for scope in missing],
        )


async def create_key(
    conn: Connection,
    account_id: int,
    by_key: int | None,
    client_address: str | None,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    held: frozenset[str],
) -> NewKey:
    """Make the key and its audit entry, in one transaction (409 at the keys' cap; 403 for a
    scope the maker does not hold)."""
    check_granted(scopes, held)
    async with conn.transaction():
        try:
            made = await accounts.create_key(
                conn, account_id, name=name, scopes=scopes, expires_at=expires_at
            )
        except TooManyKeys as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        await audit.record(
            conn,
            account_id,
            by_key,
            client_address,
            "key.created",
            {
                "id": made.id,
                "name": made.name,
                "prefix": made.prefix,
                "scopes": list(made.scopes),
                "expires_at": made.public()["expires_at"],
            },
        )
    return made


async def revoke_key(
    conn: Connection,
    account_id: int,
    by_key: int | None,
    client_address: str | None,
    key_id: int,
    held: frozenset[str],
) -> bool:
    """Revoke the key and record it, in one transaction; False if no such working key (403
    for a key holding a scope the revoker does not)."""
    async with conn.transaction():
        listed = await accounts.key_summary(conn, account_id, key_id)
        if listed is None:
            return False
        check_granted(listed["scopes"], held)
        if not await accounts.revoke_key(conn, account_id, key_id):
            return False
        await audit.record(
            conn,
            account_id,
            by_key,
            client_address,
            "key.revoked",
            {"id": key_id, "name": listed["name"], "prefix": listed["prefix"]},
        )
    return True


def key_id_of(raw: str) -> int:
    """A key id from the path, or a 404 (nothing else can name a key)."""
    if _KEY_ID.fullmatch(raw) is None:
        raise not_found("key")
    return int(raw)


async def create(request: web.Request) -> web.Response:
    """POST /v1/keys: a new key; its secret is shown in this answer only."""
    name, scopes, expires_at = checked_key_request(await json_object(request))
    async with request.app[POOL].acquire() as conn:
        made = await create_key(
            conn,
            request[ACCOUNT_ID],
            request.get(KEY_ID),
            client_address(request),
            name,
            scopes,
            expires_at,
            request.get(HELD, frozenset()),
        )
    return _json(made.public(), 201)


async def list_keys(request: web.Request) -> web.Response:
    """GET /v1/keys: the working keys, without secrets, with last_used_at."""
    return _json({"keys": await accounts.list_keys(request.app[POOL], request[ACCOUNT_ID])})


async def delete(request: web.Request) -> web.Response:
    """DELETE /v1/keys/{key_id}: revoke the key at once."""
    key_id = key_id_of(request.match_info["key_id"])
    async with request.app[POOL].acquire() as conn:
        if not await revoke_key(
            conn,
            request[ACCOUNT_ID],
            request.get(KEY_ID),
            client_address(request),
            key_id,
            request.get(HELD, frozenset()),
        ):
            raise not_found("key")
    return web.Response(status=204)


async def rotate(request: web.Request) -> web.Response:
    """POST /v1/keys/{key_id}/rotate {"overlap_seconds"}: a new secret; the old one works
    overlap_seconds longer (0 by default: not at all)."""
    key_id = key_id_of(request.match_info["key_id"])
    data = await json_object(request) if request.can_read_body else {}
    problems = Problems()
    fields = Fields(data, problems, allowed={"overlap_seconds"})
    overlap = fields.integer("overlap_seconds", 0, minimum=0, maximum=accounts.MAX_OVERLAP_SECONDS)
    problems.check()
    account_id = request[ACCOUNT_ID]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        listed = await accounts.key_summary(conn, account_id, key_id)
        if listed is None:
            raise not_found("key")
        check_granted(listed["scopes"], request.get(HELD, frozenset()))
        try:
            made = await accounts.rotate_named_key(conn, account_id, key_id, overlap)
        except TooManyKeys as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        if made is None:
            raise not_found("key")
        await audit.record(
            conn,
            account_id,
            request.get(KEY_ID),
            client_address(request),
            "key.rotated",
            {
                "id": key_id,
                "new_id": made.id,
                "new_prefix": made.prefix,
                "overlap_seconds": overlap,
            },
        )
    return _json({**made.public(), "replaces": key_id, "overlap_seconds": overlap}, 201)
