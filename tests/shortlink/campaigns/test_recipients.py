"""A campaign's recipients by keyset on phone number (shortlink.campaigns.recipients)."""

from __future__ import annotations

import asyncpg

from forwarder.recorder import record
from shortlink.campaigns import recipients
from tests.clicks import clicks, events, make_links


async def test_recipients_pages_cover_each_link_once(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Keyset pages by phone number, then links without a number, each link exactly once."""
    made = await make_links(db, account_id, 7, client_identifier="people")
    await db.execute(
        "UPDATE links SET phone_number = NULL WHERE id = ANY($1)", [made[1].id, made[4].id]
    )
    await record(db, events(clicks(made[:1])) + events(clicks(made[:1])), batch_size=100)
    seen, cursor = [], None
    while True:
        items, cursor = await recipients.recipients(
            db, account_id, "people", phone_prefix=None, cursor=cursor, limit=2
        )
        seen += items
        if cursor is None:
            break
    assert [r["tracking_url_id"] for r in seen] == [made[i].id for i in (0, 2, 3, 5, 6, 1, 4)]
    assert (seen[0]["taps"], seen[0]["device_type"], seen[0]["os"]) == (2, "mobile", "iOS")
    assert seen[1]["taps"] == 0
    assert seen[1]["first_tap_at"] is None


def test_phone_prefix_range() -> None:
    """A prefix's range ends where the next prefix starts (with a carry over nines)."""
    assert recipients.phone_prefix_range("4477") == ("4477", "4478")
    assert recipients.phone_prefix_range("4479") == ("4479", "448")
    assert recipients.phone_prefix_range("99") == ("99", None)
