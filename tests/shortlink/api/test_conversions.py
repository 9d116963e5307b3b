"""/v1/conversions: recording, naming the link, validation, idempotency; the link's list and
the campaign's counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from forwarder.recorder import record
from shortlink import clickevent
from shortlink.links import LinkEntry, fetch_entry
from tests.clicks import clicks
from tests.shortlink.api.conftest import Client, Tenant, new_tenant


async def post_links(client: Client, count: int, campaign: str = "winter") -> list[str]:
    """`count` links of one campaign, each its own message (client_ref m0, m1, ...); tokens."""
    answer = await client.post(
        "/v1/links",
        {
            "url": "https://shop.example/winter",
            "client_identifier": campaign,
            "recipients": [
                {"phone_number": f"4477009{i:05d}", "client_ref": f"m{i}"} for i in range(count)
            ],
        },
    )
    assert answer.status == 201
    return [link["token"] for link in answer.json["links"]]


async def entry(db: asyncpg.Connection, token: str) -> LinkEntry:
    found = await fetch_entry(db, token)
    assert found is not None
    return found


async def record_tap(db: asyncpg.Connection, token: str, at: float) -> None:
    """A person's tap on the link at `at` (Unix seconds), recorded as the forwarder would."""
    link = await entry(db, token)
    events = [clickevent.decode(value) for _, value in clicks([link], at=at)]
    await record(db, events, batch_size=100)


async def test_a_conversion_is_recorded_and_answered_in_full(
    client: Client, db: asyncpg.Connection
) -> None:
    """A purchase posted by token is 201 with every field; a link never tapped has no time
    since its first click."""
    [token] = await post_links(client, 1)
    answer = await client.post(
        "/v1/conversions",
        {
            "token": token,
            "event": "purchase",
            "disposition": "positive",
            "value": 19.99,
            "currency": "EUR",
            "occurred_at": "2026-01-05T10:00:00+01:00",
            "metadata": {"order": "A-17", "items": [1, 2]},
        },
    )
    assert answer.status == 201, answer.json
    body = answer.json
    assert isinstance(body.pop("conversion_id"), int)
    link_id = (await entry(db, token)).id
    assert body == {
        "tracking_url_id": link_id,
        "token": token,
        "client_ref": "m0",
        "event": "purchase",
        "disposition": "positive",
        "value": 19.99,
        "currency": "EUR",
        "occurred_at": "2026-01-05T09:00:00Z",
        "seconds_since_first_click": None,
        "metadata": {"order": "A-17", "items": [1, 2]},
    }
    assert b'"value":19.99,' in answer.body  # the number as posted, not a float's digits


async def test_seconds_since_the_first_tap_and_the_default_time(
    client: Client, db: asyncpg.Connection
) -> None:
    """After a tap, the answer says how long after it the conversion happened; without
    occurred_at it happened now."""
    [token] = await post_links(client, 1)
    first = datetime.now(UTC) - timedelta(minutes=10)
    await record_tap(db, token, first.timestamp())
    before = datetime.now(UTC)
    answer = await client.post(
        "/v1/conversions", {"token": token, "event": "signup", "disposition": "positive"}
    )
    assert answer.status == 201
    occurred = datetime.fromisoformat(answer.json["occurred_at"])
    assert before - timedelta(seconds=1) <= occurred <= datetime.now(UTC)
    assert answer.json["seconds_since_first_click"] == pytest.approx(
        (occurred - first).total_seconds(), abs=0.01
    )
    assert answer.json["value"] is None
    assert answer.json["currency"] is None


async def test_client_ref_must_name_exactly_one_link(client: Client) -> None:
    """A message id naming one link records; naming two is 409; naming none is 404."""
    await post_links(client, 1, campaign="one")
    answer = await client.post(
        "/v1/conversions", {"client_ref": "m0", "event": "refusal", "disposition": "negative"}
    )
    assert answer.status == 201
    assert answer.json["client_ref"] == "m0"
    await post_links(client, 1, campaign="two")  # a second link with client_ref m0
    twice = await client.post(
        "/v1/conversions", {"client_ref": "m0", "event": "refusal", "disposition": "negative"}
    )
    assert twice.status == 409
    assert twice.json["error"]["code"] == "ambiguous_client_ref"
    none = await client.post(
        "/v1/conversions", {"client_ref": "nope", "event": "refusal", "disposition": "negative"}
    )
    assert none.status == 404


async def test_another_accounts_token_is_404(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A token of another account's link is not found, and nothing is recorded."""
    [token] = await post_links(client, 1)
    other = Client(client.server, client.session, (await new_tenant(db)).key)
    answer = await other.post(
        "/v1/conversions", {"token": token, "event": "purchase", "disposition": "positive"}
    )
    assert answer.status == 404
    assert (
        await db.fetchval(
            "SELECT count(*) FROM conversions c JOIN links l ON l.id = c.link_id "
            "WHERE l.token = $1",
            token,
        )
        == 0
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "purchase", "disposition": "maybe"}, "disposition"),
        ({"event": "", "disposition": "positive"}, "event"),
        ({"event": "x" * 65, "disposition": "positive"}, "event"),
        ({"event": "a\u0000b", "disposition": "positive"}, "event"),
        ({"event": "link_click", "disposition": "positive"}, "event"),
        (
            {"event": "purchase", "disposition": "positive", "value": 5, "currency": "EURO"},
            "currency",
        ),
        (
            {"event": "purchase", "disposition": "positive", "value": 5, "currency": "eur"},
            "currency",
        ),
        (
            {"event": "purchase", "disposition": "positive", "value": 5, "currency": "ABC"},
            "currency",
        ),
        ({"event": "purchase", "disposition": "positive", "value": 5}, "currency"),
        ({"event": "purchase", "disposition": "positive", "currency": "EUR"}, "value"),
        ({"event": "purchase", "disposition": "positive", "value": -1, "currency": "EUR"}, "value"),
        (
            {"event": "purchase", "disposition": "positive", "value": "5", "currency": "EUR"},
            "value",
        ),
        (
            {"event": "purchase", "disposition": "positive", "value": 1e16, "currency": "EUR"},
            "value",
        ),
        (
            {"event": "p", "disposition": "positive", "occurred_at": "2026-01-05T10:00:00"},
            "occurred_at",
        ),
        (
            {"event": "p", "disposition": "positive", "occurred_at": "2026-02-30T10:00:00Z"},
            "occurred_at",
        ),
        ({"event": "p", "disposition": "positive", "occurred_at": "yesterday"}, "occurred_at"),
        (
            {"event": "p", "disposition": "positive", "occurred_at": "1969-12-31T23:59:59Z"},
            "occurred_at",
        ),
        (
            {"event": "p", "disposition": "positive", "occurred_at": "2999-01-01T00:00:00Z"},
            "occurred_at",
        ),
        ({"event": "p", "disposition": "positive", "metadata": ["a"]}, "metadata"),
        ({"event": "p", "disposition": "positive", "metadata": {"x": "y" * 4100}}, "metadata"),
        ({"event": "p", "disposition": "positive", "colour": "red"}, "colour"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    client: Client, db: asyncpg.Connection, body: dict[str, object], field: str
) -> None:
    """A bad disposition, event, currency, value, time or metadata is 422 and records nothing."""
    [token] = await post_links(client, 1)
    answer = await client.post("/v1/conversions", {"token": token, **body})
    assert answer.status == 422, answer.json
    assert [d["field"] for d in answer.json["error"]["details"]] == [field]
    link_id = (await entry(db, token)).id
    assert await db.fetchval("SELECT count(*) FROM conversions WHERE link_id = $1", link_id) == 0


async def test_the_link_is_named_by_token_or_client_ref_exactly(client: Client) -> None:
    """Neither, both, or a malformed token is 422."""
    [token] = await post_links(client, 1)
    for named in ({}, {"token": token, "client_ref": "m0"}, {"token": "no!"}):
        answer = await client.post(
            "/v1/conversions", {**named, "event": "purchase", "disposition": "positive"}
        )
        assert answer.status == 422, named
        assert answer.json["error"]["details"][0]["field"] == "token"
    nulls = await client.post(
        "/v1/conversions",
        {
            "token": token,
            "client_ref": None,
            "value": None,
            "currency": None,
            "event": "purchase",
            "disposition": "positive",
        },
    )
    assert nulls.status == 201  # null is taken as not given


async def test_metadata_of_4_kib_is_kept_as_posted(client: Client) -> None:
    """Metadata of exactly 4,096 bytes as JSON (NUL included) is accepted and shown back."""
    [token] = await post_links(client, 1)
    metadata = {"note": "a\u0000b", "pad": ""}
    metadata["pad"] = "x" * (4096 - len(b'{"note":"a\\u0000b","pad":""}'))
    answer = await client.post(
        "/v1/conversions",
        {"token": token, "event": "purchase", "disposition": "positive", "metadata": metadata},
    )
    assert answer.status == 201, answer.json
    assert answer.json["metadata"] == metadata
    shown = (await client.get(f"/v1/links/{token}")).json["conversions"]
    assert shown[0]["metadata"] == metadata


@pytest.mark.parametrize("depth", [33, 300, 1000])
async def test_metadata_nested_deeper_than_32_levels_is_a_422(client: Client, depth: int) -> None:
    """Metadata nested past 32 levels is a 422 naming metadata (300 levels was a 500)."""
    [token] = await post_links(client, 1)
    base = f'{{"token":"{token}","event":"purchase","disposition":"positive","metadata":'
    for levels, status in ((depth, 422), (32, 201)):
        nested = '{"a":' * (levels - 1) + "[1]" + "}" * (levels - 1)
        answer = await client.post("/v1/conversions", raw=(base + nested + "}").encode())
        assert answer.status == status, (levels, answer.body[:200])
        if status == 422:
            [detail] = answer.json["error"]["details"]
            assert detail == {
                "field": "metadata",
                "message": "must be nested at most 32 levels deep",
            }


async def test_an_idempotency_key_returns_the_first_result_and_counts_once(
    client: Client,
) -> None:
    """A retry with the same key returns the first conversion; the campaign counts it once."""
    [token] = await post_links(client, 1, campaign="idem")
    body = {
        "token": token,
        "event": "purchase",
        "disposition": "positive",
        "value": 10,
        "currency": "USD",
    }
    headers = {"Idempotency-Key": "conv-1"}
    first = await client.post("/v1/conversions", body, headers=headers)
    again = await client.post("/v1/conversions", body, headers=headers)
    assert (first.status, again.status) == (201, 201)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json == first.json
    assert len((await client.get(f"/v1/links/{token}")).json["conversions"]) == 1
    stats = (await client.get("/v1/campaigns/idem/stats")).json
    assert stats["conversions"]["positive"] == 1
    assert stats["conversions"]["value"] == {"USD": 10}


async def test_the_link_lists_its_conversions_link_click_first(
    client: Client, db: asyncpg.Connection
) -> None:
    """The first human tap records link_click once (later taps do not); posted conversions
    follow in time order, in the link's status and its message's listing."""
    [token] = await post_links(client, 1)
    tapped = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    await record_tap(db, token, tapped.timestamp())
    await record_tap(db, token, tapped.timestamp() + 60)
    for event, minutes in (("purchase", 30), ("signup", 5)):
        answer = await client.post(
            "/v1/conversions",
            {
                "token": token,
                "event": event,
                "disposition": "positive",
                "occurred_at": (tapped + timedelta(minutes=minutes)).isoformat(),
            },
        )
        assert answer.status == 201
    status = (await client.get(f"/v1/links/{token}")).json
    listed = [
        (c["event"], c["disposition"], c["seconds_since_first_click"])
        for c in status["conversions"]
    ]
    assert listed == [
        ("link_click", "positive", 0.0),
        ("signup", "positive", 300.0),
        ("purchase", "positive", 1800.0),
    ]
    assert status["conversions"][0]["occurred_at"] == "2026-01-05T09:00:00Z"
    by_ref = (await client.get("/v1/links?client_ref=m0")).json["links"]
    assert by_ref[0]["conversions"] == status["conversions"]


async def test_campaign_statistics_count_enterprise_conversions(
    client: Client, db: asyncpg.Connection
) -> None:
    """Positive and negative per event, positive values per currency, converted links once
    each and the conversion rate; link_click conversions are not counted there."""
    tokens = await post_links(client, 4, campaign="stats")
    await record_tap(db, tokens[0], datetime.now(UTC).timestamp() - 60)
    posted = [
        (tokens[0], "purchase", "positive", 19.99, "EUR"),
        (tokens[0], "purchase", "positive", 0.01, "EUR"),
        (tokens[1], "purchase", "positive", 5, "USD"),
        (tokens[1], "signup", "positive", None, None),
        (tokens[2], "purchase", "negative", 7, "EUR"),
        (tokens[2], "refusal", "negative", None, None),
    ]
    for token, event, disposition, value, currency in posted:
        body: dict[str, object] = {"token": token, "event": event, "disposition": disposition}
        if value is not None:
            body |= {"value": value, "currency": currency}
        assert (await client.post("/v1/conversions", body)).status == 201
    stats = (await client.get("/v1/campaigns/stats/stats")).json
    assert stats["conversions"] == {
        "positive": 4,
        "negative": 2,
        "by_event": {
            "purchase": {"positive": 3, "negative": 1},
            "signup": {"positive": 1, "negative": 0},
            "refusal": {"positive": 0, "negative": 1},
        },
        "value": {"EUR": 20, "USD": 5},
        "converted_links": 2,
    }
    assert stats["conversion_rate"] == 0.5
    assert stats["unique_clicks"] == 1
    assert b'"EUR":20.00' in (await client.get("/v1/campaigns/stats/stats")).body


async def test_a_campaign_without_conversions_has_zeros(client: Client) -> None:
    """The conversions block is there, empty, before anything is posted."""
    await post_links(client, 2, campaign="quiet")
    stats = (await client.get("/v1/campaigns/quiet/stats")).json
    assert stats["conversions"] == {
        "positive": 0,
        "negative": 0,
        "by_event": {},
        "value": {},
        "converted_links": 0,
    }
    assert stats["conversion_rate"] == 0.0
