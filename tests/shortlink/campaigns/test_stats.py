"""A campaign's statistics, read from the counters (shortlink.campaigns.stats)."""

from __future__ import annotations

import asyncpg

from forwarder.recorder import record
from shortlink.campaigns.counters import OTHER, VALUES_SHOWN
from shortlink.campaigns.stats import campaign
from tests.clicks import clicks, events, make_links
from tests.forwarder.test_recorder import made_up_browser


async def test_statistics_show_the_values_with_most_clicks_and_sum_the_rest(
    db: asyncpg.Connection, account_id: int
) -> None:
    """by_browser holds the VALUES_SHOWN browsers with most clicks and Other for the
    rest, so a campaign's statistics stay small whatever taps arrived."""
    links = await make_links(db, account_id, 4)
    batch = events(clicks(links))  # Mobile Safari: 4 clicks
    for n in range(VALUES_SHOWN + 10):
        batch += events(clicks(links[: 1 + n % 3], user_agent=made_up_browser(n)))
    await record(db, batch, batch_size=100)
    found = await campaign(db, account_id, "spring-sale")
    assert found is not None
    browsers = found["by_browser"]
    assert len(browsers) == VALUES_SHOWN + 1
    assert browsers["Mobile Safari"] == 4
    assert sum(browsers.values()) == found["total_clicks"] == len(batch)
    shown = [count for value, count in browsers.items() if value != OTHER]
    assert min(shown) >= 2  # every value shown has more clicks than any summed in Other
    assert sorted(browsers.values(), reverse=True) == list(browsers.values())
