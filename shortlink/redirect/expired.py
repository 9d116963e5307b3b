"""Where a tap on an expired link goes when the link names no place of its own: its
account's expired_url, kept in memory by every redirect worker.

The map holds only the accounts that have one (usually few: a dict of a few hundred
entries). It is read on the expired path only, never by a tap on a live link. It is
kept in step like the link cache (shortlink.redirect.listener): an account's change
is notified with its new URL in the payload (shortlink.changes.notify_account) and
applied as it arrives, within milliseconds; every reconnect and every poll reads the
whole map again, so a missed notification is corrected within POLL_EVERY.
"""

from __future__ import annotations

from shortlink import changes
from shortlink.db import Executor


class ExpiredPlaces:
    """Account id -> its expired_url, for the accounts that have one."""

    def __init__(self) -> None:
        self.urls: dict[int, str] = {}  # the hit path's expired branch reads this dict

    def notified(self, payload: str) -> bool:
        """Apply an `@account url` notification; False if the payload is not one."""
        parsed = changes.parse_account(payload)
        if parsed is None:
            return False
        account_id, url = parsed
        if url is None:
            self.urls.pop(account_id, None)
        else:
            self.urls[account_id] = url
        return True

    async def reload(self, conn: Executor) -> None:
        """Read every account's expired_url again (in place: the handler holds `urls`)."""
        rows = await conn.fetch(
            "SELECT id, expired_url FROM accounts WHERE expired_url IS NOT NULL"
        )
        fresh = {row["id"]: row["expired_url"] for row in rows}
        for account_id in [a for a in self.urls if a not in fresh]:
            del self.urls[account_id]
        self.urls.update(fresh)
