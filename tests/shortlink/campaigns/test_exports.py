"""Every click of a campaign, a batch at a time (shortlink.campaigns.exports)."""

from __future__ import annotations

import asyncpg

from forwarder.recorder import record
from shortlink.campaigns import exports
from tests.clicks import clicks, events, make_links


async def test_all_clicks_in_batches_oldest_first(db: asyncpg.Connection, account_id: int) -> None:
    """The export walks every click once, oldest first, however the batches fall."""
    made = await make_links(db, account_id, 5, client_identifier="walk")
    start = made[0].created_at_ms / 1000
    batch = []
    for i, link in enumerate(made):
        batch += events(clicks([link], at=start + 10 * i))
    await record(db, batch, batch_size=100)
    rows = [
        row async for chunk in exports.all_clicks(db, account_id, "walk", batch=2) for row in chunk
    ]
    assert [row[1] for row in rows] == [link.id for link in made]
