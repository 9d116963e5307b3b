"""Smart destinations through the API: rules and variants on creation, rules on a link's
change, a campaign retargeted in one request, and the statistics by variant and by rule."""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from forwarder.recorder import record
from shortlink.links import ENTRY_COLUMNS, LinkEntry
from tests.clicks import clicks, events
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Client, Tenant, new_tenant

IOS_RULE = {"when": {"os": "iOS"}, "url": "https://apps.apple.com/app/id1"}
ES_RULE = {"when": {"language": "es", "country": ["ES", "MX"]}, "url": "https://e.example/es"}


def recipients(count: int) -> list[dict[str, str]]:
    return [{"phone_number": f"4477009{i:05d}", "client_ref": f"m{i}"} for i in range(count)]


async def test_links_take_rules_and_one_variant_each_by_weight(
    client: Client, db: asyncpg.Connection
) -> None:
    """Each link gets one variant, kept as its url; the rules are stored and shown."""
    answer = await client.post(
        "/v1/links",
        {
            "variants": [
                {"url": "https://a.example/", "weight": 70},
                {"url": "https://b.example/", "weight": 30},
            ],
            "rules": [IOS_RULE, ES_RULE],
            "recipients": recipients(400),
            "client_identifier": "ab",
        },
    )
    assert answer.status == 201, answer.json
    rows = await db.fetch(
        "SELECT target_url, variant, rules FROM links WHERE id = ANY($1::bigint[])",
        [link["tracking_url_id"] for link in answer.json["links"]],
    )
    drawn = Counter((row["variant"], row["target_url"]) for row in rows)
    assert set(drawn) == {(0, "https://a.example/"), (1, "https://b.example/")}
    assert 0.55 < drawn[0, "https://a.example/"] / 400 < 0.85
    assert {orjson.loads(row["rules"])[0]["url"] for row in rows} == {IOS_RULE["url"]}
    token = answer.json["links"][0]["token"]
    shown = (await client.get(f"/v1/links/{token}")).json
    assert shown["rules"][1] == {
        "when": {"country": ["ES", "MX"], "language": ["es"]},
        "url": "https://e.example/es",
    }
    assert shown["variant"] in (0, 1)


async def test_messages_take_rules_for_every_link(client: Client, db: asyncpg.Connection) -> None:
    """POST /v1/messages with rules gives each tracked URL of the body those rules."""
    answer = await client.post(
        "/v1/messages",
        {
            "to": ["447700900001"],
            "body": 'See #track("https://shop.example/x")',
            "rules": [IOS_RULE],
        },
    )
    assert answer.status == 201, answer.json
    rules = await db.fetchval(
        "SELECT rules FROM links WHERE id = $1",
        answer.json["messages"][0]["links"][0]["tracking_url_id"],
    )
    assert orjson.loads(rules) == [{"when": {"os": ["iOS"]}, "url": IOS_RULE["url"]}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "https://x.example/", "rules": [IOS_RULE] * 21}, "rules"),
        ({"url": "https://x.example/", "rules": [{"when": {"os": "iOS"}}]}, "rules[0].url"),
        (
            {
                "url": "https://x.example/",
                "rules": [{"when": {"country": "XXX"}, "url": "https://y.example"}],
            },
            "rules[0].when.country",
        ),
        (
            {
                "url": "https://x.example/",
                "rules": [{"when": {"before": "soon"}, "url": "https://y.example"}],
            },
            "rules[0].when.before",
        ),
        ({"variants": [{"url": "https://a.example/", "weight": 0}]}, "variants[0].weight"),
        (
            {"variants": [{"url": "https://a.example/", "weight": 1}], "url": "https://x.example/"},
            "variants",
        ),
        ({"variants": []}, "variants"),
        ({}, "url"),
    ],
)
async def test_bad_rules_and_variants_are_422_naming_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    """Each problem is a 422 whose details name where it is."""
    answer = await client.post("/v1/links", body)
    assert answer.status == 422, answer.json
    assert field in [detail["field"] for detail in answer.json["error"]["details"]]


async def test_hostile_rules_never_make_a_500(client: Client) -> None:
    """Random bytes, deep nesting, huge strings and odd encodings in rules and variants are 4xx."""
    randomness = random.Random(2026)
    nested = "[" * 400 + "]" * 400
    bodies = [
        b'{"url": "https://x.example/", "rules": ' + nested.encode() + b"}",
        b'{"url": "https://x.example/", "rules": [{"when": {"os": "'
        + b"A" * 500_000
        + b'"}, "url": "https://y.example"}]}',
        b'{"url": "https://x.example/", "rules": [{"when": {"language": "\\ud800"}, "url": "https://y.example"}]}',
        b'{"variants": [{"url": "https://a.example/", "weight": 1e400}]}',
        b'{"variants": [{"url": "\\u0000", "weight": 1}]}',
    ]
    for _ in range(40):
        blob = os.urandom(randomness.randrange(1, 200))
        bodies.append(b'{"url": "https://x.example/", "rules": "' + blob.hex().encode() + b'"}')
        bodies.append(b'{"url": "https://x.example/", "rules": [' + blob + b"]}")
    for body in bodies:
        answer = await client.post("/v1/links", raw=body)
        assert 400 <= answer.status < 500, (body[:80], answer.status)
        assert "error" in answer.json


async def test_a_links_rules_change_and_are_removed(client: Client) -> None:
    """PATCH /v1/links/{token} takes rules; [] removes them."""
    made = await client.post("/v1/links", {"url": "https://x.example/"})
    token = made.json["links"][0]["token"]
    changed = await client.call("PATCH", f"/v1/links/{token}", {"rules": [IOS_RULE]})
    assert changed.status == 200, changed.json
    assert changed.json["rules"] == [{"when": {"os": ["iOS"]}, "url": IOS_RULE["url"]}]
    removed = await client.call("PATCH", f"/v1/links/{token}", {"rules": []})
    assert removed.json["rules"] == []
    bad = await client.call("PATCH", f"/v1/links/{token}", {"rules": [{"when": {}}]})
    assert bad.status == 422


async def test_a_campaign_is_retargeted_in_one_request_and_audited(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """PATCH /v1/campaigns/{name} changes every link, answers the count, and the audit log
    says who did it; another campaign's links are untouched."""
    await client.post(
        "/v1/links",
        {"url": "https://old.example/", "recipients": recipients(30), "client_identifier": "fix"},
    )
    await client.post(
        "/v1/links",
        {"url": "https://other.example/", "recipients": recipients(3), "client_identifier": "keep"},
    )
    answer = await client.call(
        "PATCH", "/v1/campaigns/fix", {"url": "https://new.example/", "rules": [IOS_RULE]}
    )
    assert answer.status == 200, answer.json
    assert answer.json == {"client_identifier": "fix", "links": 30}
    targets = await db.fetch(
        "SELECT client_identifier, target_url, rules IS NOT NULL AS has_rules, count(*) AS n "
        "FROM links WHERE account_id = $1 GROUP BY 1, 2, 3 ORDER BY 1",
        tenant.account_id,
    )
    assert [tuple(row.values()) for row in targets] == [
        ("fix", "https://new.example/", True, 30),
        ("keep", "https://other.example/", False, 3),
    ]
    entries = (await client.get("/v1/audit")).json["entries"]
    assert entries[0]["action"] == "campaign.retargeted"
    assert entries[0]["summary"]["links"] == 30
    assert entries[0]["summary"]["url"] == "https://new.example/"
    assert (
        await client.call("PATCH", "/v1/campaigns/nope", {"url": "https://n.example/"})
    ).status == 404
    assert (await client.call("PATCH", "/v1/campaigns/fix", {})).status == 422
    bad = await client.call("PATCH", "/v1/campaigns/fix", {"rules": [IOS_RULE] * 21})
    assert bad.status == 422


async def test_statistics_clicks_and_csv_show_variants_and_rules(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """by_variant and by_rule count clicks, unique clicks and positive conversions; the
    clicks listing and the CSV show each click's destination, rule and variant."""
    made = await client.post(
        "/v1/links",
        {
            "variants": [
                {"url": "https://a.example/", "weight": 1},
                {"url": "https://b.example/", "weight": 1},
            ],
            "rules": [IOS_RULE],
            "recipients": recipients(40),
            "client_identifier": "abtest",
        },
    )
    rows = await db.fetch(
        "SELECT id, token, target_url, phone_number, client_ref, variant, "
        "floor(extract(epoch FROM created_at) * 1000)::int8 AS ms FROM links "
        "WHERE id = ANY($1::bigint[]) ORDER BY id",
        [link["tracking_url_id"] for link in made.json["links"]],
    )
    entries = {
        row["variant"]: LinkEntry(
            row["id"],
            row["token"],
            tenant.account_id,
            row["target_url"],
            row["phone_number"],
            row["client_ref"],
            "abtest",
            row["ms"],
            4e9,
            False,
            False,
        )
        for row in rows
    }
    a, b = entries[0], entries[1]
    batch = events(clicks([a], smart=(IOS_RULE["url"], 0, 0)))
    batch += events(clicks([a], smart=(IOS_RULE["url"], 0, 0)))
    batch += events(clicks([b], smart=("https://b.example/", None, 1)))
    await record(db, batch, batch_size=100)
    conversion = await client.post(
        "/v1/conversions", {"token": a.token, "event": "purchase", "disposition": "positive"}
    )
    assert conversion.status in (200, 201), conversion.json
    stats = (await client.get("/v1/campaigns/abtest/stats")).json
    assert stats["by_variant"] == {
        "0": {
            "url": "https://a.example/",
            "clicks": 2,
            "unique_clicks": 1,
            "positive_conversions": 1,
            "conversion_rate": 1.0,
        },
        "1": {
            "url": "https://b.example/",
            "clicks": 1,
            "unique_clicks": 1,
            "positive_conversions": 0,
            "conversion_rate": 0.0,
        },
    }
    assert stats["by_rule"]["0"]["url"] == IOS_RULE["url"]
    assert stats["by_rule"]["0"]["clicks"] == 2
    assert stats["by_rule"]["none"]["clicks"] == 1
    listed = (await client.get("/v1/campaigns/abtest/clicks")).json["clicks"]
    assert sorted((c["destination"], c["rule_index"], c["variant_index"]) for c in listed) == [
        ("https://apps.apple.com/app/id1", 0, 0),
        ("https://apps.apple.com/app/id1", 0, 0),
        ("https://b.example/", None, 1),
    ]
    async with client.session.get(
        client.server.url + "/v1/campaigns/abtest/clicks.csv",
        headers={"Authorization": f"Bearer {client.key}"},
    ) as response:
        csv = (await response.read()).decode()
    header = csv.splitlines()[0]
    assert header.endswith("destination,rule_index,variant_index")
    assert "https://apps.apple.com/app/id1,0,0" in csv


async def test_a_new_url_for_one_variant_link_drops_its_variant(
    client: Client, db: asyncpg.Connection
) -> None:
    """PATCH /v1/links/{token} with a url, like a campaign's retarget, ends the link's
    variant: its later clicks are not counted for a variant whose page they never saw."""
    made = await client.post(
        "/v1/links",
        {
            "variants": [{"url": "https://a.example/", "weight": 1}],
            "recipients": recipients(1),
            "client_identifier": "ab-one",
        },
    )
    token = made.json["links"][0]["token"]
    assert (await client.get(f"/v1/links/{token}")).json["variant"] == 0
    changed = await client.call("PATCH", f"/v1/links/{token}", {"url": "https://z.example/"})
    assert changed.status == 200, changed.json
    assert changed.json["variant"] is None
    unsafe_only = await client.call("PATCH", f"/v1/links/{token}", {"unsafe": True})
    assert unsafe_only.json["link"] == "https://z.example/"


async def test_a_retarget_never_touches_another_accounts_same_named_campaign(
    client: Client, api_server: RunningServer, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Two accounts with a campaign of the same name: one's PATCH changes only its links,
    and the other's campaign_destinations row is not created or changed."""
    other = await new_tenant(db)
    async with aiohttp.ClientSession() as session:
        them = Client(api_server, session, other.key)
        await them.post(
            "/v1/links",
            {
                "url": "https://theirs.example/",
                "recipients": recipients(2),
                "client_identifier": "same",
            },
        )
        await client.post(
            "/v1/links",
            {
                "url": "https://mine.example/",
                "recipients": recipients(2),
                "client_identifier": "same",
            },
        )
        answer = await client.call("PATCH", "/v1/campaigns/same", {"url": "https://moved.example/"})
        assert answer.json == {"client_identifier": "same", "links": 2}
        theirs = await db.fetch(
            "SELECT DISTINCT target_url FROM links WHERE account_id = $1", other.account_id
        )
        assert [row["target_url"] for row in theirs] == ["https://theirs.example/"]
        assert not await db.fetchval(
            "SELECT count(*) FROM campaign_destinations WHERE account_id = $1", other.account_id
        )
        assert (
            await them.call("PATCH", "/v1/campaigns/nope-" + "x", {"url": "https://n.example/"})
        ).status == 404


async def test_a_plain_campaigns_statistics_have_no_destination_groups(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A campaign without rules or variants answers empty by_variant and by_rule, read
    without grouping its clicks (the statistics stay a handful of rows however many)."""
    made = await client.post(
        "/v1/links",
        {"url": "https://p.example/", "recipients": recipients(3), "client_identifier": "plain"},
    )
    ids = [link["tracking_url_id"] for link in made.json["links"]]
    entries = [
        LinkEntry.from_row(row)
        for row in await db.fetch(
            "SELECT " + ENTRY_COLUMNS + " FROM links WHERE id = ANY($1::bigint[])", ids
        )
    ]
    await record(db, events(clicks(entries)), batch_size=100)
    stats = (await client.get("/v1/campaigns/plain/stats")).json
    assert stats["total_clicks"] == 3
    assert (stats["by_variant"], stats["by_rule"]) == ({}, {})
    token = made.json["links"][0]["token"]
    await client.call("PATCH", f"/v1/links/{token}", {"rules": [IOS_RULE]})
    stats = (await client.get("/v1/campaigns/plain/stats")).json
    assert stats["by_rule"]["none"]["clicks"] == 3  # given rules, its groups are read
    sent = await client.post(
        "/v1/messages",
        {
            "to": ["447700900001"],
            "body": 'See #track("https://m.example/")',
            "client_identifier": "rules-only",
            "rules": [IOS_RULE],
        },
    )
    assert sent.status == 201, sent.json
    assert await db.fetchval(
        "SELECT count(*) FROM campaign_destinations WHERE account_id = $1 AND campaign = $2",
        tenant.account_id,
        "rules-only",
    )


async def test_rules_whose_urls_grow_when_encoded_are_422_not_500(client: Client) -> None:
    """Twenty rules of 2,000 non-ASCII characters each (percent-encoded, six times longer)
    are refused as a 422 naming the field, never a 500 from the column's limit."""
    wide = "https://e.example/" + "é" * 2000
    answer = await client.post(
        "/v1/links",
        {"url": "https://x.example/", "rules": [{"when": {"os": "iOS"}, "url": wide}] * 20},
    )
    assert answer.status == 422, answer.json
    assert "rules" in answer.body.decode()
    made = await client.post("/v1/links", {"url": "https://x.example/", "client_identifier": "w"})
    token = made.json["links"][0]["token"]
    for method, path in (("PATCH", f"/v1/links/{token}"), ("PATCH", "/v1/campaigns/w")):
        changed = await client.call(
            method, path, {"rules": [{"when": {"os": "iOS"}, "url": wide}] * 20}
        )
        assert changed.status == 422, changed.json
