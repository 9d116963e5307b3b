"""/v1/account: storage settings, shown, changed, bounded; the lifetime links get from it."""

from __future__ import annotations

import random
from datetime import datetime

import asyncpg
import pytest

from tests.infra import RunningServer
from tests.shortlink.api.conftest import Client, Tenant, raw_request

DEFAULTS = {
    "link_lifetime_days": 90,
    "click_retention_days": 400,
    "ip_storage": "full",
    "expired_url": None,
}


def lifetime_days(link: dict[str, str]) -> float:
    made = datetime.fromisoformat(link["created_at"])
    ends = datetime.fromisoformat(link["expires_at"])
    return (ends - made).total_seconds() / 86400


async def test_settings_start_at_their_defaults_and_change_field_by_field(
    client: Client,
) -> None:
    """GET shows the defaults; PATCH changes only what it names; null removes expired_url."""
    assert (await client.get("/v1/account")).json == DEFAULTS
    changed = await client.call(
        "PATCH",
        "/v1/account",
        {"link_lifetime_days": 30, "expired_url": "https://shop.example.com/offers"},
    )
    assert changed.status == 200
    assert changed.json == {
        **DEFAULTS,
        "link_lifetime_days": 30,
        "expired_url": "https://shop.example.com/offers",
    }
    again = await client.call(
        "PATCH", "/v1/account", {"ip_storage": "truncated", "click_retention_days": 1825}
    )
    assert again.json["expired_url"] == "https://shop.example.com/offers"
    assert again.json["ip_storage"] == "truncated"
    cleared = await client.call("PATCH", "/v1/account", {"expired_url": None})
    assert cleared.json == {
        **DEFAULTS,
        "link_lifetime_days": 30,
        "ip_storage": "truncated",
        "click_retention_days": 1825,
    }
    assert (await client.get("/v1/account")).json == cleared.json


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "(body)"),
        ({"link_lifetime_days": 0}, "link_lifetime_days"),
        ({"link_lifetime_days": 366}, "link_lifetime_days"),
        ({"link_lifetime_days": 2**63 - 1}, "link_lifetime_days"),
        ({"link_lifetime_days": "30"}, "link_lifetime_days"),
        ({"link_lifetime_days": True}, "link_lifetime_days"),
        ({"link_lifetime_days": 1.5}, "link_lifetime_days"),
        ({"click_retention_days": 1826}, "click_retention_days"),
        ({"click_retention_days": -1}, "click_retention_days"),
        ({"ip_storage": "partial"}, "ip_storage"),
        ({"ip_storage": "FULL"}, "ip_storage"),
        ({"ip_storage": "x" * 10_000}, "ip_storage"),
        ({"ip_storage": ["none"]}, "ip_storage"),
        ({"expired_url": "ftp://example.com/"}, "expired_url"),
        ({"expired_url": "https://sl.test/AbC1234"}, "expired_url"),
        ({"expired_url": "https://example.com/\u0000"}, "expired_url"),
        ({"expired_url": "https://example.com/" + "a" * 2048}, "expired_url"),
        ({"expired_url": ""}, "expired_url"),
        ({"expired_url": {"url": "https://example.com/"}}, "expired_url"),
        ({"retention": 30}, "retention"),
    ],
)
async def test_bad_settings_are_422_and_change_nothing(
    client: Client, body: dict[str, object], field: str
) -> None:
    """Each bad or unknown field is a 422 naming it, and the settings stay as they were."""
    answer = await client.call("PATCH", "/v1/account", body)
    assert answer.status == 422, body
    assert answer.json["error"]["details"][0]["field"] == field
    assert (await client.get("/v1/account")).json == DEFAULTS


async def test_hostile_bodies_are_4xx(api_server: RunningServer, tenant: Tenant) -> None:
    """Random bytes, deep nesting and a non-object body are 4xx, never a 500."""
    chaos = random.Random(2323)
    bodies = [
        bytes(chaos.randrange(256) for _ in range(chaos.randrange(1, 300))) for _ in range(30)
    ]
    bodies += [b"[" * 5000 + b"]" * 5000, b"[]", b"null", b'"x"', b'{"expired_url": 1e999}']
    for body in bodies:
        answer = await raw_request(
            api_server,
            "PATCH",
            b"/v1/account",
            [f"Authorization: Bearer {tenant.key}".encode(), b"Content-Type: application/json"],
            body,
        )
        assert 400 <= answer.status < 500, (body[:40], answer.status)


async def test_settings_need_a_key_and_are_the_accounts_own(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Without a key 401; one account's PATCH leaves another's settings alone."""
    assert (await client.get("/v1/account", key=None)).status == 401
    await client.call("PATCH", "/v1/account", {"link_lifetime_days": 7})
    other = await db.fetchval(
        "SELECT count(*) FROM accounts WHERE id <> $1 AND link_lifetime_days = 7",
        tenant.account_id,
    )
    assert other == 0


async def test_links_and_messages_live_the_accounts_lifetime_unless_they_say(
    client: Client,
) -> None:
    """Without expires_in_days a link lives link_lifetime_days; with it, at most 365 days."""
    made = (await client.post("/v1/links", {"url": "https://example.com/"})).json["links"][0]
    status = (await client.get(f"/v1/links/{made['token']}")).json
    assert lifetime_days(status) == pytest.approx(90, abs=1e-6)
    await client.call("PATCH", "/v1/account", {"link_lifetime_days": 12})
    made = (await client.post("/v1/links", {"url": "https://example.com/"})).json["links"][0]
    status = (await client.get(f"/v1/links/{made['token']}")).json
    assert lifetime_days(status) == pytest.approx(12, abs=1e-6)
    sent = await client.post(
        "/v1/messages",
        {"to": ["+447700900123"], "body": "Hi https://example.com/x", "mode": "first"},
    )
    token = sent.json["messages"][0]["links"][0]["token"]
    status = (await client.get(f"/v1/links/{token}")).json
    assert lifetime_days(status) == pytest.approx(12, abs=1e-6)
    own = await client.post("/v1/links", {"url": "https://example.com/", "expires_in_days": 365})
    status = (await client.get(f"/v1/links/{own.json['links'][0]['token']}")).json
    assert lifetime_days(status) == pytest.approx(365, abs=1e-6)
    for route, body in (
        ("/v1/links", {"url": "https://example.com/", "expires_in_days": 366}),
        ("/v1/links", {"url": "https://example.com/", "expires_in_days": 3650}),
        (
            "/v1/messages",
            {
                "to": ["+447700900123"],
                "body": "https://e.com",
                "mode": "first",
                "expires_in_days": 366,
            },
        ),
    ):
        answer = await client.post(route, body)
        assert answer.status == 422
        assert answer.json["error"]["details"][0]["field"] == "expires_in_days"


async def test_a_links_expired_url_is_stored_shown_changed_and_checked(client: Client) -> None:
    """expired_url given to POST /v1/links and /v1/messages shows in the status; PATCH changes
    or removes it; a bad one is 422 and makes nothing."""
    made = await client.post(
        "/v1/links",
        {"url": "https://example.com/", "expired_url": "https://example.com/over"},
    )
    token = made.json["links"][0]["token"]
    assert (await client.get(f"/v1/links/{token}")).json["expired_url"] == (
        "https://example.com/over"
    )
    sent = await client.post(
        "/v1/messages",
        {
            "to": ["+447700900123"],
            "body": "Hi https://example.com/x",
            "mode": "first",
            "expired_url": "https://example.com/later",
        },
    )
    message_token = sent.json["messages"][0]["links"][0]["token"]
    shown = (await client.get(f"/v1/links/{message_token}")).json
    assert shown["expired_url"] == "https://example.com/later"
    path = f"/v1/links/{token}"
    changed = await client.call("PATCH", path, {"expired_url": "https://example.com/next"})
    assert changed.json["expired_url"] == "https://example.com/next"
    assert (await client.call("PATCH", path, {"unsafe": True})).json["expired_url"] == (
        "https://example.com/next"
    )
    assert (await client.call("PATCH", path, {"expired_url": None})).json["expired_url"] is None
    for route, body in (
        ("/v1/links", {"url": "https://example.com/", "expired_url": "javascript:alert(1)"}),
        ("/v1/links", {"url": "https://example.com/", "expired_url": "https://sl.test/x"}),
        (
            "/v1/messages",
            {"to": ["+447700900123"], "body": "https://e.com", "mode": "first", "expired_url": 7},
        ),
    ):
        answer = await client.post(route, body)
        assert answer.status == 422, body
        assert answer.json["error"]["details"][0]["field"] == "expired_url"
    bad = await client.call("PATCH", path, {"expired_url": "https://example.com/\u0000"})
    assert bad.status == 422
