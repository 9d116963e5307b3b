"""GET /v1/campaigns: the account's campaigns, newest first, by cursor; bad input is a 422."""

from __future__ import annotations

import asyncpg

from forwarder.recorder import record
from tests.clicks import clicks, make_links
from tests.shortlink.api.conftest import Client, Tenant, new_tenant
from tests.shortlink.api.dashboard.conftest import events


async def test_campaigns_newest_first_page_by_page(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Figures and activity per campaign; limit=1 pages through them with the cursor."""
    first = await make_links(db, tenant.account_id, 4, client_identifier="first")
    await make_links(db, tenant.account_id, 2, client_identifier="second")
    await make_links(db, (await new_tenant(db)).account_id, 1, client_identifier="not-mine")
    await record(db, events(clicks(first[:2], user_agent="WhatsApp/2")), batch_size=100)
    await record(db, events(clicks(first[:1])), batch_size=100)
    answer = await client.get("/v1/campaigns?limit=1")
    assert answer.status == 200
    [newest] = answer.json["campaigns"]
    assert newest["client_identifier"] == "second"
    assert newest["first_activity"] is None
    answer = await client.get(f"/v1/campaigns?limit=1&cursor={answer.json['next_cursor']}")
    [older] = answer.json["campaigns"]
    assert answer.json["next_cursor"] is None
    assert (older["client_identifier"], older["links"], older["total_clicks"]) == ("first", 4, 1)
    assert (older["unique_clicks"], older["bot_clicks"], older["click_through_rate"]) == (
        1,
        2,
        0.25,
    )
    assert older["first_activity"] <= older["last_activity"]
    assert older["created_at"].endswith("Z")
    assert older["last_activity"].endswith("Z")
    answer = await client.get("/v1/campaigns?q=SEC")
    assert [c["client_identifier"] for c in answer.json["campaigns"]] == ["second"]


async def test_bad_limit_and_cursor_are_422(client: Client) -> None:
    """A limit out of range or a cursor the API did not make names its field."""
    for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("cursor=zz", "cursor")):
        answer = await client.get(f"/v1/campaigns?{query}")
        assert answer.status == 422
        assert answer.json["error"]["details"][0]["field"] == field
    assert (await client.get("/v1/campaigns", key=None)).status == 401
