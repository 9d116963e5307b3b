"""The audit log: every administrative change, who made it, from where, and what changed.

Any route or command that changes an account's administration calls `record` with
the connection of its own transaction, so the entry exists exactly when the change
does. A summary says what changed and never holds a secret (a key's prefix, not
the key; whether an endpoint has a signing secret, not the secret).

    action                      made by                           summary
    key.created                 POST /v1/keys, the dashboard      id, name, prefix, scopes,
                                                                  expires_at
    key.rotated                 POST /v1/keys/{id}/rotate         id, new_id, new_prefix,
                                                                  overlap_seconds
    key.revoked                 DELETE /v1/keys/{id}, dashboard   id, name, prefix
    keys.replaced               `shortlink account rotate-key`    new_prefix
    endpoint.changed            PUT /v1/endpoint, `endpoint set`  the endpoint as GET
                                                                  /v1/endpoint shows it
    account.rate_limit_changed  `shortlink account rate-limit`    rate_limit_per_minute
    account.disabled            `shortlink account disable`       (empty)
    account.settings_changed    PATCH /v1/account                 the settings as GET
                                                                  /v1/account shows them
    erasure.made                POST /v1/erasures                 erasure_id and the counts
                                                                  (never the number)
    campaign.retargeted         PATCH /v1/campaigns/{campaign}    client_identifier, links,
                                                                  url and/or rules
    domain.added                POST /v1/domains, `domain add`    domain, verified
    domain.verified             POST /v1/domains/{d}/verify       domain
    domain.changed              PATCH /v1/domains/{d}             domain and the fields given
    domain.removed              DELETE /v1/domains/{d}, `domain   domain
                                remove`

Actions are `<thing>.<what happened>` in lower case (the table checks the form);
a new kind of change adds its name here. Entries are kept AUDIT_RETENTION_DAYS
(400 by default): shortlink.purge deletes older ones in small batches.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from shortlink.campaigns.cursor import CursorForm
from shortlink.db import Connection, Executor
from shortlink.timestamps import rfc3339

ACTIONS = frozenset(
    {
        "key.created",
        "key.rotated",
        "key.revoked",
        "keys.replaced",
        "endpoint.changed",
        "account.rate_limit_changed",
        "account.disabled",
        "account.settings_changed",
        "erasure.made",
        "campaign.retargeted",
        "domain.added",
        "domain.verified",
        "domain.changed",
        "domain.removed",
    }
)
_ACTION = re.compile(r"[a-z_]{1,40}\.[a-z_]{1,40}")
MAX_ADDRESS = 64
PURGE_BATCH = 1000
# A page position: the entry's id (the key part is empty).
CURSOR = CursorForm(r"^[0-9]{1,18}-$")
_AFTER_LAST = 2**63 - 1  # no entry's id reaches it: the first page (one index range either way)


async def record(
    conn: Connection,
    account_id: int,
    key_id: int | None,
    client_address: str | None,
    action: str,
    summary: dict[str, Any],
) -> None:
    """Add an entry, in the caller's transaction. `action` is one of ACTIONS' form."""
    if _ACTION.fullmatch(action) is None:
        raise ValueError(f"not an audit action name: {action!r}")
    await conn.execute(
        """
        INSERT INTO audit_log (account_id, key_id, client_address, action, summary)
        VALUES ($1, $2, $3, $4, $5::jsonb)
        """,
        account_id,
        key_id,
        None if client_address is None else client_address[:MAX_ADDRESS],
        action,
        orjson.dumps(summary).decode(),
    )


async def entries(
    conn: Executor, account_id: int, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """The account's entries, newest first, after `cursor`; and the next page's cursor.
    A cursor that is not one CURSOR reads is BadCursor."""
    before = CURSOR.decode(cursor)[0] if cursor is not None else None
    rows = await conn.fetch(
        """
        SELECT id, at, key_id, client_address, action, summary::text AS summary
        FROM audit_log
        WHERE account_id = $1 AND id < $2
        ORDER BY id DESC LIMIT $3
        """,
        account_id,
        _AFTER_LAST if before is None else before,
        limit + 1,
    )
    page, next_cursor = CURSOR.page(rows, limit, lambda row: (row["id"], b""))
    return [
        {
            "id": row["id"],
            "at": rfc3339(row["at"]),
            "key_id": row["key_id"],
            "client_address": row["client_address"],
            "action": row["action"],
            "summary": orjson.loads(row["summary"]),
        }
        for row in page
    ], next_cursor
