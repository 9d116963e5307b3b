"""The account's campaigns by keyset, newest first (shortlink.campaigns.summaries)."""

from __future__ import annotations

import asyncpg
import pytest

from shortlink.campaigns import summaries
from shortlink.exceptions import BadCursor
from tests.clicks import make_links


async def test_campaigns_page_newest_first_with_a_cursor(
    db: asyncpg.Connection, account_id: int
) -> None:
    """Pages of two walk every campaign once, newest first; the search treats % and _ literally."""
    for name in ("a", "b_1", "c%", "d"):
        await make_links(db, account_id, 1, client_identifier=name)
    seen, cursor = [], None
    while True:
        items, cursor = await summaries.campaigns(
            db, account_id, search=None, cursor=cursor, limit=2
        )
        seen += [item["client_identifier"] for item in items]
        if cursor is None:
            break
    assert seen == ["d", "c%", "b_1", "a"]
    found, _ = await summaries.campaigns(db, account_id, search="_", cursor=None, limit=10)
    assert [item["client_identifier"] for item in found] == ["b_1"]
    found, _ = await summaries.campaigns(db, account_id, search="%", cursor=None, limit=10)
    assert [item["client_identifier"] for item in found] == ["c%"]
    with pytest.raises(BadCursor):
        await summaries.campaigns(db, account_id, search=None, cursor="e30", limit=2)
