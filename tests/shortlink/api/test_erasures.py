"""POST /v1/erasures: a number's data removed from links, clicks, conversions, deliveries."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest

from forwarder.recorder import record
from shortlink import erasures
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from shortlink.links import LinkEntry, NewLink, create_links
from tests.clicks import clicks, events
from tests.forwarder.endpoint import set_endpoint
from tests.infra import RunningServer, running, wait_until
from tests.shortlink.api.conftest import Client, Tenant, new_tenant, raw_request

ERASED = "447700900123"
KEPT = "447700900124"


async def links_of(
    db: asyncpg.Connection, account_id: int, specs: list[tuple[str, str | None]]
) -> list[LinkEntry]:
    """One link per (phone, campaign), as the redirect server would cache it."""
    new = [
        NewLink(f"https://shop.example.com/{i}", phone, f"m{i}", campaign)
        for i, (phone, campaign) in enumerate(specs)
    ]
    made = await create_links(db, account_id, new)
    return [LinkEntry.made(account_id, c, s) for c, s in zip(made, new, strict=True)]


async def stored_bodies(db: asyncpg.Connection, account_id: int) -> list[bytes]:
    rows = await db.fetch(
        """
        SELECT d.body FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
        WHERE e.account_id = $1
        UNION ALL
        SELECT o.detail FROM outbox o JOIN endpoints e ON e.id = o.endpoint_id
        WHERE e.account_id = $1
        """,
        account_id,
    )
    return [row[0] for row in rows]


async def test_a_number_is_erased_everywhere_and_the_counts_stay(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Links, clicks, conversion metadata, deliveries and outbox rows lose the number and its
    click details; the other number's data and the campaign counters stay; a repeat is zeros."""
    account = tenant.account_id
    await set_endpoint(db, account, "http://127.0.0.1:9/hook", conversions=True)
    mine = await links_of(
        db, account, [(ERASED, "spring"), (ERASED, "spring"), (ERASED, "summer"), (ERASED, None)]
    )
    [other] = await links_of(db, account, [(KEPT, "spring")])
    # 5 clicks in batches of 3: one delivery of 3, two clicks left in the outbox.
    await record(db, events(clicks([*mine, other], ip="145.97.39.155")), batch_size=3)
    posted = await client.post(
        "/v1/conversions",
        {
            "token": mine[0].token,
            "event": "purchase",
            "disposition": "positive",
            "metadata": {"email": "someone@example.com"},
        },
    )
    assert posted.status == 201
    stats_before = await db.fetch(
        "SELECT * FROM campaign_stats WHERE account_id = $1 ORDER BY campaign", account
    )
    assert any(ERASED.encode() in body for body in await stored_bodies(db, account))
    # Another account's link to the same number is not this account's to erase.
    stranger = await new_tenant(db)
    [theirs] = await links_of(db, stranger.account_id, [(ERASED, "spring")])

    answer = await client.post("/v1/erasures", {"phone_number": "+44 (0)7700 900123"})
    assert answer.status == 201
    done = answer.json
    assert (done["links"], done["clicks"], done["conversions"]) == (4, 4, 1)
    assert done["deliveries"] >= 2  # the conversion's event and the batch(es) holding its clicks

    phones = await db.fetch(
        "SELECT id, phone_number FROM links WHERE id = ANY($1::bigint[])",
        [link.id for link in [*mine, other, theirs]],
    )
    assert {row["id"]: row["phone_number"] for row in phones} == {
        **{link.id: None for link in mine},
        other.id: KEPT,
        theirs.id: ERASED,
    }
    rows = await db.fetch(
        """
        SELECT link_id, phone_number, client_ip, user_agent, referer, country, browser
        FROM clicks WHERE account_id = $1
        """,
        account,
    )
    for row in rows:
        if row["link_id"] == other.id:
            assert row["phone_number"] == KEPT
            assert row["user_agent"] is not None
            assert str(row["client_ip"]) == "145.97.39.155"
        else:
            details = [row[k] for k in ("phone_number", "client_ip", "user_agent", "referer")]
            assert details == [None] * 4
            assert row["country"] is None
            assert row["browser"] == "Mobile Safari"  # names nobody: kept
    metadata = await db.fetch("SELECT metadata FROM conversions WHERE link_id = $1", mine[0].id)
    assert all(row["metadata"] is None for row in metadata)
    bodies = await stored_bodies(db, account)
    assert not any(ERASED.encode() in body for body in bodies)
    assert any(KEPT.encode() in body for body in bodies)
    assert not any(b"someone@example.com" in body for body in bodies)
    stats_after = await db.fetch(
        "SELECT * FROM campaign_stats WHERE account_id = $1 ORDER BY campaign", account
    )
    assert [dict(r) for r in stats_after] == [dict(r) for r in stats_before]

    receipt = await db.fetchrow("SELECT * FROM erasures WHERE id = $1", done["erasure_id"])
    assert receipt["account_id"] == account
    assert ERASED not in str(dict(receipt))
    assert erasures.phone_hash(ERASED, receipt["phone_salt"]) == receipt["phone_hash"]
    assert (receipt["links"], receipt["clicks"]) == (4, 4)

    repeat = (await client.post("/v1/erasures", {"phone_number": ERASED})).json
    assert {k: v for k, v in repeat.items() if k != "erasure_id"} == {
        "links": 0,
        "clicks": 0,
        "conversions": 0,
        "deliveries": 0,
    }
    assert repeat["erasure_id"] != done["erasure_id"]


async def test_a_tap_made_before_and_recorded_after_keeps_no_number(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A click event still in Kafka when the number was erased is recorded, and queued for the
    endpoint, without the number: the link's number (none) wins over the event's."""
    await set_endpoint(db, tenant.account_id, "http://127.0.0.1:9/hook")
    [link] = await links_of(db, tenant.account_id, [(ERASED, "spring")])
    backlog = events(clicks([link]))
    assert backlog[0].phone_number == ERASED
    assert (await client.post("/v1/erasures", {"phone_number": ERASED})).json["links"] == 1
    outcome = await record(db, backlog, batch_size=100)
    assert outcome.recorded == 1
    stored = await db.fetchval(
        "SELECT phone_number FROM clicks WHERE event_id = $1", backlog[0].event_id
    )
    assert stored is None
    detail = await db.fetchval("SELECT detail FROM outbox WHERE event_id = $1", backlog[0].event_id)
    assert orjson.loads(detail)["PhoneNumber"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "phone_number"),
        ({"phone_number": None}, "phone_number"),
        ({"phone_number": "12"}, "phone_number"),
        ({"phone_number": "+44 7700 9001"}, "phone_number"),
        ({"phone_number": "x" * 41}, "phone_number"),
        ({"phone_number": "+44 7700\u0000900123"}, "phone_number"),
        ({"phone_number": 447700900123}, "phone_number"),
        ({"phone_number": ["447700900123"]}, "phone_number"),
        ({"phone_number": ERASED, "campaign": "spring"}, "campaign"),
    ],
)
async def test_bad_requests_are_422_and_erase_nothing(
    client: Client, db: asyncpg.Connection, tenant: Tenant, body: dict[str, object], field: str
) -> None:
    """A bad or unknown field is a 422 naming it; nothing is erased, no receipt is kept."""
    [link] = await links_of(db, tenant.account_id, [(ERASED, None)])
    answer = await client.post("/v1/erasures", body)
    assert answer.status == 422, body
    assert answer.json["error"]["details"][0]["field"] == field
    assert await db.fetchval("SELECT phone_number FROM links WHERE id = $1", link.id) == ERASED
    receipts = await db.fetchval(
        "SELECT count(*) FROM erasures WHERE account_id = $1", tenant.account_id
    )
    assert receipts == 0


async def test_hostile_bodies_are_4xx(api_server: RunningServer, tenant: Tenant) -> None:
    """Random bytes, deep nesting and odd JSON are 4xx, never a 500; no key is a 401."""
    chaos = random.Random(17)
    bodies = [
        bytes(chaos.randrange(256) for _ in range(chaos.randrange(1, 200))) for _ in range(30)
    ]
    bodies += [b"{" * 3000, b"[]", b'{"phone_number": {"a": [1, 2]}}', b'{"phone_number": 1e400}']
    for body in bodies:
        answer = await raw_request(
            api_server,
            "POST",
            b"/v1/erasures",
            [f"Authorization: Bearer {tenant.key}".encode(), b"Content-Type: application/json"],
            body,
        )
        assert 400 <= answer.status < 500, (body[:40], answer.status)
    unauthorised = await raw_request(
        api_server, "POST", b"/v1/erasures", [b"Content-Type: application/json"], b"{}"
    )
    assert unauthorised.status == 401


@pytest.fixture
async def slow_client(api_env: dict[str, str], tenant: Tenant) -> AsyncIterator[Client]:
    """The API as `tenant`, with no time budget for erasures: each is left to the job."""
    config = ApiConfig.from_env({**api_env, "ERASURE_BUDGET_SECONDS": "0"})
    async with running(create_app(config)) as server, aiohttp.ClientSession() as session:
        yield Client(server, session, tenant.key)


async def test_an_erasure_past_its_budget_answers_202_and_the_job_finishes_it(
    slow_client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Past the budget POST answers 202 with the erasure's id and its Location; the API's
    erasure job carries it on, and GET shows it running, then done with its counts."""
    await set_endpoint(db, tenant.account_id, "http://127.0.0.1:9/hook")
    mine = await links_of(db, tenant.account_id, [(ERASED, "spring"), (ERASED, None)])
    await record(db, events(clicks(mine)), batch_size=100)
    answer = await slow_client.post("/v1/erasures", {"phone_number": ERASED})
    assert answer.status == 202
    erasure_id = answer.json["erasure_id"]
    assert answer.json == {"erasure_id": erasure_id, "status": "running"}
    assert answer.headers["Location"] == f"/v1/erasures/{erasure_id}"

    seen: list[dict[str, object]] = []

    async def finished() -> bool:
        state = await slow_client.get(f"/v1/erasures/{erasure_id}")
        assert state.status == 200
        seen.append(state.json)
        return bool(state.json["status"] == "done")

    await wait_until(finished, within=30, what="the erasure job to finish")
    done = seen[-1]
    assert (done["links"], done["clicks"], done["conversions"]) == (2, 2, 0)
    assert done["finished_at"] is not None
    assert (
        await db.fetchval(
            "SELECT count(*) FROM links WHERE phone_number = $1 AND account_id = $2",
            ERASED,
            tenant.account_id,
        )
        == 0
    )


async def test_an_erasure_is_only_its_accounts_to_read(
    client: Client, db: asyncpg.Connection
) -> None:
    """GET /v1/erasures/{id}: the account's own erasure is 200 and done; another account's,
    an unknown id and hostile ids are 404, never a 500."""
    made = await client.post("/v1/erasures", {"phone_number": ERASED})
    assert made.status == 201
    own = await client.get(f"/v1/erasures/{made.json['erasure_id']}")
    assert own.status == 200
    assert own.json["status"] == "done"
    stranger = await new_tenant(db)
    theirs = (await erasures.erase(db, stranger.account_id, ERASED)).erasure_id
    for path in (
        f"/v1/erasures/{theirs}",
        "/v1/erasures/999999999999",
        "/v1/erasures/abc",
        "/v1/erasures/0",
        "/v1/erasures/" + "9" * 400,
        "/v1/erasures/%00",
        "/v1/erasures/-1",
        "/v1/erasures/1e3",
        "/v1/erasures/%F0%9F%92%A9",
    ):
        answer = await client.get(path)
        assert answer.status == 404, path
        assert answer.json["error"]["code"] == "not_found"
