"""/v1/campaigns: statistics from the counters, and the clicks, page by page."""

from __future__ import annotations

import base64

import asyncpg
import pytest

from forwarder.recorder import record
from shortlink.links import LinkEntry
from tests.clicks import clicks, events
from tests.shortlink.api.conftest import Client, Tenant

WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


async def campaign_links(
    client: Client, db: asyncpg.Connection, tenant: Tenant, count: int
) -> list[LinkEntry]:
    recipients = [{"phone_number": f"4477009{i:05d}", "client_ref": f"m{i}"} for i in range(count)]
    made = (
        await client.post(
            "/v1/links",
            {
                "url": "https://shop.example/",
                "recipients": recipients,
                "client_identifier": "autumn",
            },
        )
    ).json["links"]
    rows = await db.fetch(
        "SELECT id, token, phone_number, client_ref, created_at FROM links WHERE id = ANY($1)",
        [m["tracking_url_id"] for m in made],
    )
    by_id = {r["id"]: r for r in rows}
    return [
        LinkEntry(
            m["tracking_url_id"],
            m["token"],
            tenant.account_id,
            "https://shop.example/",
            by_id[m["tracking_url_id"]]["phone_number"],
            by_id[m["tracking_url_id"]]["client_ref"],
            "autumn",
            int(by_id[m["tracking_url_id"]]["created_at"].timestamp() * 1000),
            4e9,
            False,
            False,
        )
        for m in made
    ]


async def test_stats_count_people_and_bots_apart(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Totals, unique clicks, bots, CTR, breakdowns and time to first click add up."""
    links = await campaign_links(client, db, tenant, 10)
    start = links[0].created_at_ms / 1000
    batch = events(clicks(links[:4], at=start + 30))  # four people on iPhones
    batch += events(clicks(links[:1], at=start + 40))  # one of them again
    batch += events(clicks(links[4:5], at=start + 600, user_agent=WINDOWS_CHROME, ip="8.8.8.8"))
    batch += events(clicks(links[5:8], user_agent="WhatsApp/2.23.20.0 A"))  # previews
    await record(db, batch, batch_size=100)
    answer = await client.get("/v1/campaigns/autumn/stats")
    assert answer.status == 200
    stats = answer.json
    assert stats["links"] == 10
    assert (stats["total_clicks"], stats["unique_clicks"], stats["bot_clicks"]) == (6, 5, 3)
    assert stats["click_through_rate"] == 0.5
    assert stats["by_device_type"] == {"mobile": 5, "desktop": 1}
    assert stats["by_os"] == {"iOS": 5, "Windows": 1}
    assert stats["by_browser"]["Mobile Safari"] == 5
    assert stats["by_country"] == {"unknown": 5, "US": 1}  # 203.0.113.7 is documentation
    assert 28 <= stats["median_seconds_to_first_click"] <= 32
    assert 570 <= stats["p90_seconds_to_first_click"] <= 630
    assert (await client.get("/v1/campaigns/nope/stats")).status == 404


async def test_clicks_are_listed_newest_first_with_cursors(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Clicks come newest first, 2 per page here, until next_cursor is null; bots flagged."""
    links = await campaign_links(client, db, tenant, 3)
    start = links[0].created_at_ms / 1000
    batch = []
    for i, link in enumerate(links):
        batch += events(clicks([link], at=start + 10 * (i + 1)))
    batch += events(clicks(links[:1], at=start + 100, user_agent="facebookexternalhit/1.1"))
    await record(db, batch, batch_size=100)
    seen = []
    cursor = None
    for _ in range(5):
        path = "/v1/campaigns/autumn/clicks?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(path)).json
        seen += page["clicks"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 4
    times = [c["clicked_at"] for c in seen]
    assert times == sorted(times, reverse=True)
    assert all(time.endswith("Z") for time in times)  # one timestamp format (docs/api.md)
    assert seen[0]["is_bot"] is True
    assert seen[1]["browser"] == "Mobile Safari"
    assert seen[1]["ip"] == "203.0.113.7"
    assert seen[1]["device_type"] == "mobile"
    assert {c["phone_number"] for c in seen} == {link.phone_number for link in links}
    assert (seen[1]["country"], seen[1]["region"]) == (None, None)


async def test_clicks_and_stats_say_where_from(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Each listed click has the country (and region, where known) of its IP; the statistics
    count people by country."""
    links = await campaign_links(client, db, tenant, 3)
    batch = events(clicks(links[:2], ip="145.97.39.155"))
    batch += events(clicks(links[2:], ip="2001:67c:2e8::1"))
    batch += events(clicks(links[2:], ip="127.0.0.1"))
    await record(db, batch, batch_size=100)
    listed = (await client.get("/v1/campaigns/autumn/clicks")).json["clicks"]
    by_ip = {c["ip"]: (c["country"], c["region"]) for c in listed}
    assert by_ip == {
        "145.97.39.155": ("NL", None),
        "2001:67c:2e8::1": ("NL", None),
        "127.0.0.1": (None, None),
    }
    stats = (await client.get("/v1/campaigns/autumn/stats")).json
    assert stats["by_country"] == {"NL": 3, "unknown": 1}


async def test_clicks_of_one_phone_number(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """phone_number narrows the listing to that recipient's clicks (any format accepted)."""
    links = await campaign_links(client, db, tenant, 3)
    await record(db, events(clicks(links)) + events(clicks(links[1:2])), batch_size=100)
    phone = links[1].phone_number
    assert phone is not None
    page = (await client.get(f"/v1/campaigns/autumn/clicks?phone_number=%2B{phone}")).json
    assert len(page["clicks"]) == 2
    assert {c["phone_number"] for c in page["clicks"]} == {phone}
    bad = await client.get("/v1/campaigns/autumn/clicks?phone_number=123")
    assert bad.status == 422
    assert (await client.get("/v1/campaigns/autumn/clicks?cursor=garbage")).status == 422
    assert (await client.get("/v1/campaigns/autumn/clicks?limit=5000")).status == 422


@pytest.mark.parametrize(
    "cursor",
    [
        # The cursor format before: base64 of [time, event id], here with an event id
        # that is not a UUID (it answered 500).
        base64.urlsafe_b64encode(b'["2024-05-01T10:00:00+00:00", "not-a-uuid"]').decode(),
        "garbage",
        "1-" + "z" * 32,
        "1-" + "A" * 32,
        "123456789012345678-" + "0" * 32,
    ],
)
async def test_a_cursor_the_api_did_not_make_is_422(client: Client, cursor: str) -> None:
    """Any cursor that is not of the next_cursor form is a 422 naming the cursor, never a 500."""
    answer = await client.get(f"/v1/campaigns/autumn/clicks?cursor={cursor}")
    assert answer.status == 422
    assert answer.json["error"]["details"][0]["field"] == "cursor"


async def test_any_cursor_of_the_documented_form_is_read(client: Client) -> None:
    """Cursors of the documented form are positions, the smallest and the largest alike."""
    for cursor in ("0-" + "0" * 32, "9" * 17 + "-" + "f" * 32):
        answer = await client.get(f"/v1/campaigns/autumn/clicks?cursor={cursor}")
        assert answer.json == {"clicks": [], "next_cursor": None}


async def test_a_campaign_name_that_cannot_be_stored_is_422(client: Client) -> None:
    """A NUL or more than 200 characters in the campaign of the path is a 422, never a 500."""
    for name in ("spring%00", "x" * 201):
        for route in ("stats", "clicks"):
            answer = await client.get(f"/v1/campaigns/{name}/{route}")
            assert answer.status == 422, (name, route)
            assert answer.json["error"]["details"][0]["field"] == "client_identifier"
