"""Erasure by phone number (POST /v1/erasures; GDPR art. 17): one account's data about
one number, removed or nulled everywhere it is kept, the counts left as they are.

What is changed, table by table, one transaction per batch of BATCH links or rows:

- **clicks** of the number's links, and those carrying the number whose links were
  already dropped (clicks are kept longer than links): phone number, client address, user agent,
  referer, country and region become null (the device, browser and bot flag, which
  name nobody, stay; so do the campaign counters);
- **conversions** of those links: the metadata the enterprise posted becomes null;
- **deliveries** (pending, dead and delivered) and **outbox** rows of the account's
  endpoints and callbacks whose body holds the number: that click's PhoneNumber,
  UserAgent and Referrer (the address) become null, the other clicks of a batch stay
  as they were (forwarder.formats, the formats' one home, rewrites the bodies);
- **links**: the phone number becomes null, and the redirect workers drop the cached
  copies within milliseconds (shortlink.changes), so later taps carry no number; a
  tap made before and recorded after is recorded with the link's number too, that is
  none (forwarder.recorder).

Links come last: until they are changed the number still finds them, so an erasure
that stops half way (a crash, a lost connection) is finished by repeating it. A
repeat that finds nothing answers zeros. A receipt row (table erasures) keeps what
was changed and the number as a salted scrypt hash, never in clear.

How the links of a number are found without an index of their own: the links index
(account_id, client_identifier, phone_number) is probed once per campaign of the
account (campaign_stats lists them), so the work grows with the account's campaigns
and the number's links, never with the table (docs/operations.md#erasure).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from forwarder import formats
from shortlink import changes
from shortlink.db import Connection

BATCH = 500
# scrypt's cost: about 50 ms and 16 MiB a hash, so guessing numbers (a country has some
# 10^9) against a stolen receipt costs years of CPU.
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32}
_CLICK_DETAILS = """
    phone_number = NULL, client_ip = NULL, user_agent = NULL, referer = NULL,
    country = NULL, region = NULL
"""
_HAS_DETAILS = """(phone_number IS NOT NULL OR client_ip IS NOT NULL OR user_agent IS NOT NULL
                   OR referer IS NOT NULL OR country IS NOT NULL OR region IS NOT NULL)"""


@dataclass(frozen=True)
class Erasure:
    erasure_id: int
    links: int
    clicks: int
    conversions: int
    deliveries: int

    def public(self) -> dict[str, int]:
        return {
            "erasure_id": self.erasure_id,
            "links": self.links,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "deliveries": self.deliveries,
        }


def phone_hash(phone: str, salt: bytes) -> bytes:
    """The receipt's hash of a normalised number (scrypt, `salt` of 16 bytes)."""
    return hashlib.scrypt(phone.encode(), salt=salt, **_SCRYPT)


async def erase(conn: Connection, account_id: int, phone: str) -> Erasure:
    """Erase `phone` (normalised: shortlink.validation.phone_number) from the account."""
    requested_at = datetime.now(UTC)
    link_ids = await _links_of(conn, account_id, phone)
    # Clicks outlive their links (shortlink.purge): those of links already dropped are
    # found by the number they carry.
    gone = await _links_of_clicks(conn, account_id, phone)
    clicks = await _erase_clicks(conn, account_id, sorted(set(link_ids) | set(gone)))
    conversions = 0
    with_gone = sorted(set(link_ids) | set(gone))
    for start in range(0, len(with_gone), BATCH):
        status = await conn.execute(
            "UPDATE conversions SET metadata = NULL "
            "WHERE link_id = ANY($1::bigint[]) AND metadata IS NOT NULL",
            with_gone[start : start + BATCH],
        )
        conversions += int(status.split()[-1])
    deliveries = await _erase_deliveries(conn, account_id, phone)
    links = 0
    for start in range(0, len(link_ids), BATCH):
        async with conn.transaction():
            tokens = await conn.fetch(
                """
                UPDATE links SET phone_number = NULL, updated_at = now()
                WHERE account_id = $1 AND id = ANY($2::bigint[]) AND phone_number = $3
                RETURNING token
                """,
                account_id,
                link_ids[start : start + BATCH],
                phone,
            )
            await changes.notify(conn, [row["token"] for row in tokens])
        links += len(tokens)
    # Taps recorded while the links were being changed carried the number still.
    clicks += await _erase_clicks(conn, account_id, link_ids)
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(phone_hash, phone, salt)
    erasure_id: int = await conn.fetchval(
        """
        INSERT INTO erasures (account_id, phone_salt, phone_hash, links, clicks, conversions,
                              deliveries, requested_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
        """,
        account_id,
        salt,
        digest,
        links,
        clicks,
        conversions,
        deliveries,
        requested_at,
    )
    return Erasure(erasure_id, links, clicks, conversions, deliveries)


async def _links_of(conn: Connection, account_id: int, phone: str) -> list[int]:
    """The ids of the account's links to `phone`."""
    return await _ids_by_number(conn, account_id, phone, "links", "id")


async def _links_of_clicks(conn: Connection, account_id: int, phone: str) -> list[int]:
    """The link ids of the account's clicks that carry `phone`, their links dropped or not
    (an erasure is rare: a campaign's clicks are read, not the table)."""
    return await _ids_by_number(conn, account_id, phone, "clicks", "link_id")


async def _ids_by_number(
    conn: Connection, account_id: int, phone: str, table: str, column: str
) -> list[int]:
    """`column` of the account's rows of `table` (links or clicks) with `phone`: the
    table's (account_id, client_identifier, ...) index probed once per campaign of the
    account (campaign_stats lists them), the number a filter."""
    rows = await conn.fetch(
        f"""
        SELECT x.{column} FROM campaign_stats s
        CROSS JOIN LATERAL (
            SELECT DISTINCT {column} FROM {table}
            WHERE account_id = $1 AND client_identifier = s.campaign AND phone_number = $2
        ) AS x
        WHERE s.account_id = $1
        UNION
        SELECT {column} FROM {table}
        WHERE account_id = $1 AND client_identifier IS NULL AND phone_number = $2
        """,
        account_id,
        phone,
    )
    return sorted(row[column] for row in rows)


async def _erase_clicks(conn: Connection, account_id: int, link_ids: list[int]) -> int:
    count = 0
    for start in range(0, len(link_ids), BATCH):
        status = await conn.execute(
            f"""
            UPDATE clicks SET {_CLICK_DETAILS}
            WHERE account_id = $1 AND link_id = ANY($2::bigint[]) AND {_HAS_DETAILS}
            """,
            account_id,
            link_ids[start : start + BATCH],
        )
        count += int(status.split()[-1])
    return count


async def _erase_deliveries(conn: Connection, account_id: int, phone: str) -> int:
    """Rewrite the account's delivery bodies and outbox rows that hold `phone`; how many."""
    endpoint_ids = [
        row["id"]
        for row in await conn.fetch(
            "SELECT id FROM endpoints WHERE account_id = $1 OR callback_account_id = $1",
            account_id,
        )
    ]
    if not endpoint_ids:
        return 0
    needle = phone.encode()
    count = 0
    # The matches' keys first (an index scan of the account's endpoints' rows, not of
    # the table), then their bodies a batch at a time: a number's matches may be many.
    keys = await conn.fetch(
        """
        SELECT request_identifier FROM deliveries
        WHERE endpoint_id = ANY($1::bigint[]) AND position($2::bytea IN body) > 0
        """,
        endpoint_ids,
        needle,
    )
    for start in range(0, len(keys), BATCH):
        rows = await conn.fetch(
            "SELECT request_identifier, format, body FROM deliveries "
            "WHERE request_identifier = ANY($1::uuid[])",
            [row[0] for row in keys[start : start + BATCH]],
        )
        changed = []
        for row in rows:
            try:
                body = formats.erased_body(row["format"], row["body"], phone)
            except ValueError:  # a body this version cannot read: left as it is
                continue
            if body is not None:
                changed.append((row["request_identifier"], body))
        if changed:  # executemany: one transaction
            await conn.executemany(
                "UPDATE deliveries SET body = $2 WHERE request_identifier = $1", changed
            )
        count += len(changed)
    keys = await conn.fetch(
        """
        SELECT id FROM outbox
        WHERE endpoint_id = ANY($1::bigint[]) AND position($2::bytea IN detail) > 0
        """,
        endpoint_ids,
        needle,
    )
    for start in range(0, len(keys), BATCH):
        rows = await conn.fetch(
            "SELECT id, detail FROM outbox WHERE id = ANY($1::bigint[])",
            [row[0] for row in keys[start : start + BATCH]],
        )
        changed = []
        for row in rows:
            try:
                detail = formats.erased_detail(row["detail"], phone)
            except ValueError:
                continue
            if detail is not None:
                changed.append((row["id"], detail))
        if changed:
            await conn.executemany("UPDATE outbox SET detail = $2 WHERE id = $1", changed)
        count += len(changed)
    return count
