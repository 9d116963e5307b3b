"""How the API shows a link: its short URL and its status (seed 001's field names first).

Every time in an answer is written by shortlink.timestamps.rfc3339.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from shortlink import conversions
from shortlink.api.config import ApiConfig
from shortlink.db import Executor
from shortlink.timestamps import rfc3339


def short_url(
    config: ApiConfig, token: str, *, with_scheme: bool = True, domain: str | None = None
) -> str:
    """`https://tx1.in/AbC12xY`, or `tx1.in/AbC12xY` to save SMS characters; on the
    branded `domain` when the link has one."""
    bare = f"{domain or config.short_domain}/{token}"
    return f"{config.short_url_scheme}://{bare}" if with_scheme else bare


def status(
    config: ApiConfig, row: asyncpg.Record, made: Sequence[asyncpg.Record] = ()
) -> dict[str, Any]:
    """A link as the status routes show it (seed 001's field names first), with its
    conversions `made`."""
    first_click = row["first_clicked_at"]
    return {
        "link": row["target_url"],
        "shortlink": short_url(config, row["token"], domain=row["domain"]),
        "accessed": first_click is not None,
        "accessed_on": rfc3339(first_click),
        "clicks": row["clicks"],
        "unique_clicks": 1 if first_click is not None else 0,
        "tracking_url_id": row["id"],
        "token": row["token"],
        "phone_number": row["phone_number"],
        "client_ref": row["client_ref"],
        "client_identifier": row["client_identifier"],
        "created_at": rfc3339(row["created_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "unsafe": row["unsafe"],
        "disabled": row["disabled_at"] is not None,
        "callback_url": row["callback_url"],
        "expired_url": row["expired_url"],
        "domain": row["domain"],
        "conversions": [conversions.public(row, conversion) for conversion in made],
        "rules": orjson.loads(rules) if (rules := row.get("rules")) else [],
        "variant": row.get("variant"),
    }


async def statuses(
    conn: Executor, config: ApiConfig, rows: Sequence[asyncpg.Record]
) -> list[dict[str, Any]]:
    """The status of each link, its conversions read in one query for all."""
    made = await conversions.of_links(conn, [row["id"] for row in rows])
    return [status(config, row, made.get(row["id"], ())) for row in rows]
