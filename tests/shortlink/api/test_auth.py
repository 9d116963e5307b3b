"""API keys: 401 without a valid one; an account never reaches another's data."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from shortlink import accounts
from tests.shortlink.api.conftest import Client, new_tenant, raw_request


async def test_missing_or_wrong_key_is_401(client: Client) -> None:
    """No key, a malformed header or an unknown key: 401 with a JSON error."""
    for key, headers in ((None, {}), (None, {"Authorization": "Basic abc"}), ("sl_nope", {})):
        answer = await client.get("/v1/links?client_ref=x", key=key, headers=headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer sl_\xff\xfe",
        b"Bearer sl_" + "\u00e9".encode() * 43,
        b"Bearer \xc3\xa9t\xc3\xa9",
        b"\xff\xfe sl_abc",
        b"Bearer " + b"sl_" + b"A" * 44,
    ],
)
async def test_an_unreadable_key_is_a_plain_401_with_nothing_logged(
    client: Client, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    """Key bytes that are not UTF-8 or not key-shaped: 401, and no error (or traceback) logged."""
    with caplog.at_level(logging.INFO):
        answer = await raw_request(
            client.server, "GET", b"/v1/links?client_ref=x", [b"Authorization: " + header]
        )
    assert answer.status == 401
    assert answer.json["error"]["code"] == "unauthorized"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_a_request_aiohttp_cannot_parse_logs_one_warning_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL in a header is answered 400 by aiohttp and logged as a warning without traceback."""
    with caplog.at_level(logging.INFO):
        answer = await raw_request(client.server, "GET", b"/v1/links", [b"X-Probe: a\x00b"])
    assert answer.status == 400
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert any(r.getMessage().startswith("malformed request refused") for r in caplog.records)


async def test_rotated_and_disabled_keys_stop_working(
    client: Client, db: asyncpg.Connection
) -> None:
    """After rotate-key the old key is 401 and the new one works; a disabled account is 401."""
    tenant = await new_tenant(db)
    assert (await client.get("/v1/links?client_ref=x", key=tenant.key)).status == 200
    new_key = await accounts.rotate_key(db, tenant.account_id)
    assert (await client.get("/v1/links?client_ref=x", key=tenant.key)).status == 401
    assert (await client.get("/v1/links?client_ref=x", key=new_key)).status == 200
    await accounts.disable_account(db, tenant.account_id)
    assert (await client.get("/v1/links?client_ref=x", key=new_key)).status == 401


async def test_another_accounts_links_answer_404(client: Client, db: asyncpg.Connection) -> None:
    """A link of account B is invisible and unchangeable for account A."""
    other = await new_tenant(db)
    created = await client.post(
        "/v1/links",
        {"url": "https://example.com/", "recipients": [{"client_ref": "b-1"}]},
        key=other.key,
    )
    token = created.json["links"][0]["token"]
    assert (await client.get(f"/v1/links/{token}")).status == 404
    assert (await client.call("PATCH", f"/v1/links/{token}", {"unsafe": True})).status == 404
    assert (await client.call("DELETE", f"/v1/links/{token}")).status == 404
    assert (await client.get("/v1/links?client_ref=b-1")).json == {"links": []}
    assert (await client.get(f"/v1/links/{token}", key=other.key)).status == 200


async def test_another_accounts_campaigns_and_deliveries_answer_404(
    client: Client, db: asyncpg.Connection
) -> None:
    """Campaign stats, endpoints and deliveries of another account are not found."""
    other = await new_tenant(db)
    await client.post(
        "/v1/links", {"url": "https://example.com/", "client_identifier": "theirs"}, key=other.key
    )
    assert (await client.get("/v1/campaigns/theirs/stats", key=other.key)).status == 200
    assert (await client.get("/v1/campaigns/theirs/stats")).status == 404
    assert (await client.get("/v1/campaigns/theirs/clicks")).json == {
        "clicks": [],
        "next_cursor": None,
    }
    await client.call("PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/h"}, key=other.key)
    assert (await client.get("/v1/endpoint")).status == 404
