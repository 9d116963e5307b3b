"""Link changes, pushed to every redirect worker: PostgreSQL NOTIFY on one channel.

What changes a link notifies channel `link_changes` in the same transaction, so
the notification goes out exactly when the change commits:

- a changed link (new target, expiry, unsafe flag, disabled): the payload is
  its token; the workers drop it from their caches and read it again when it is
  next tapped;
- created links: the payload is `+` and id ranges, `+first:last[,first:last]`;
  the workers read those links into their caches before the SMS goes out, so a
  recipient's first tap is a cache hit (shortlink.redirect.listener);
- an account's new expired_url: the payload is `@`, the account id, a space
  and the URL (nothing after the space: none); the workers keep it for the
  account's expired links (shortlink.redirect.expired). A URL is at most 2048
  characters, well under the payload's limit.
- a branded domain's change (added, verified, settings, removed): the payload is
  `%` and the domain's name; the workers read that domain again
  (shortlink.redirect.domains).

- a retargeted campaign (shortlink.links.retarget): the payload is `=`, the
  account id, a space and the campaign's client_identifier; the workers read the
  campaign's new destination (campaign_destinations) and change its cached
  groups in place: one notification for the whole campaign, not one per link.

Notifications arrive in milliseconds, but a connection can miss some while it
is down, so links also carry `updated_at` (set by every change): a worker that
reconnects, and every worker every few seconds, reads the tokens changed since
it last knew and drops them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shortlink import partitions
from shortlink.db import Connection

CHANNEL = "link_changes"
CREATED = "+"
ACCOUNT = "@"
CAMPAIGN = "="
DOMAIN = "%"
# NOTIFY payloads must stay under 8000 bytes; beyond this many ranges, one
# covering range is sent instead (reading a few links twice is harmless).
_MAX_RANGES = 100


async def notify(conn: Connection, tokens: Sequence[str]) -> None:
    """Announce changed links (delivered when the current transaction commits)."""
    if tokens:
        await conn.execute(
            "SELECT pg_notify($1, token) FROM unnest($2::text[]) AS token", CHANNEL, list(tokens)
        )


async def notify_created(conn: Connection, ids: Iterable[int]) -> None:
    """Announce new links by id (delivered when the current transaction commits)."""
    spans = id_ranges(ids)
    if spans:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, created_payload(spans))


async def notify_account(conn: Connection, account_id: int, expired_url: str | None) -> None:
    """Announce an account's new expired_url (delivered when the transaction commits)."""
    await conn.execute(
        "SELECT pg_notify($1, $2)", CHANNEL, f"{ACCOUNT}{account_id} {expired_url or ''}"
    )


async def notify_domain(conn: Connection, name: str) -> None:
    """Announce a branded domain's change (delivered when the transaction commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, DOMAIN + name)


def parse_account(payload: str) -> tuple[int, str | None] | None:
    """(account id, expired_url or None) of an `@id url` payload; None if it is not one."""
    if not payload.startswith(ACCOUNT):
        return None
    account, _, url = payload[1:].partition(" ")
    if not (account.isascii() and account.isdigit()) or len(account) > 19:
        return None
    return int(account), url or None


def id_ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ids as inclusive (first, last) runs of consecutive ids."""
    ordered = sorted(ids)
    if ordered and ordered == list(range(ordered[0], ordered[0] + len(ordered))):
        # One run (a bulk insert that no other interleaved): compared in C, no loop in Python.
        return [(ordered[0], ordered[-1])]
    spans: list[tuple[int, int]] = []
    for link_id in ordered:
        if spans and link_id <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], link_id))
        else:
            spans.append((link_id, link_id))
    return spans


def created_payload(spans: Sequence[tuple[int, int]]) -> str:
    if len(spans) > _MAX_RANGES:
        # One covering range per period: ids carry their period (shortlink.partitions),
        # and a range across periods would span 2**40 ids.
        covering: dict[int, tuple[int, int]] = {}
        for first, last in spans:
            period = partitions.period_of_id(first)
            low, high = covering.get(period, (first, last))
            covering[period] = (min(low, first), max(high, last))
        spans = sorted(covering.values())
    return CREATED + ",".join(f"{first}:{last}" for first, last in spans)


def parse_created(payload: str) -> list[tuple[int, int]]:
    """The id ranges of a `+first:last,...` payload ([] if it is not one)."""
    if not payload.startswith(CREATED):
        return []
    spans = []
    for part in payload[1:].split(","):
        first, _, last = part.partition(":")
        if first.isdigit() and last.isdigit() and int(first) <= int(last):
            spans.append((int(first), int(last)))
    return spans


async def notify_campaign(conn: Connection, account_id: int, campaign: str) -> None:
    """Announce a retargeted campaign (delivered when the current transaction commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{CAMPAIGN}{account_id} {campaign}")


def parse_campaign(payload: str) -> tuple[int, str] | None:
    """(account id, campaign) of an `=id campaign` payload; None if it is not one."""
    if not payload.startswith(CAMPAIGN):
        return None
    account, _, campaign = payload[1:].partition(" ")
    if not (account.isascii() and account.isdigit()) or len(account) > 19 or not campaign:
        return None
    return int(account), campaign
