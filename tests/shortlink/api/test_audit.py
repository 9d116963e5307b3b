"""The audit log: what each administrative change records, GET /v1/audit, the purge."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import orjson
import pytest

from shortlink import audit
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from tests.infra import running, shortlink
from tests.shortlink.api.conftest import Client, Tenant


async def entries(client: Client, **query: str) -> list[dict]:
    path = "/v1/audit" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    answer = await client.get(path)
    assert answer.status == 200, answer.json
    return answer.json["entries"]


async def test_key_changes_are_recorded_without_secrets(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Creating, rotating and revoking a key each record an entry naming the key that made
    it and the client's address; no secret appears in the log."""
    own = await db.fetchval("SELECT id FROM api_keys WHERE account_id = $1", tenant.account_id)
    made = (await client.post("/v1/keys", {"name": "crm", "scopes": ["conversions:write"]})).json
    rotated = (await client.post(f"/v1/keys/{made['id']}/rotate", {"overlap_seconds": 60})).json
    assert (await client.call("DELETE", f"/v1/keys/{rotated['id']}")).status == 204
    log = await entries(client)
    assert [e["action"] for e in log] == ["key.revoked", "key.rotated", "key.created"]
    assert {e["key_id"] for e in log} == {own}
    assert {e["client_address"] for e in log} == {"127.0.0.1"}
    assert all(e["at"].endswith("Z") for e in log)
    assert log[2]["summary"] == {
        "id": made["id"],
        "name": "crm",
        "prefix": made["prefix"],
        "scopes": ["conversions:write"],
        "expires_at": None,
    }
    assert log[1]["summary"] == {
        "id": made["id"],
        "new_id": rotated["id"],
        "new_prefix": rotated["prefix"],
        "overlap_seconds": 60,
    }
    assert log[0]["summary"] == {"id": rotated["id"], "name": "crm", "prefix": rotated["prefix"]}
    text = orjson.dumps(log).decode()
    assert made["key"] not in text
    assert rotated["key"] not in text


async def test_an_endpoint_change_is_recorded_without_its_secret(client: Client) -> None:
    """PUT /v1/endpoint records endpoint.changed with the endpoint as GET shows it."""
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    answer = await client.call(
        "PUT", "/v1/endpoint", {"url": "http://127.0.0.1:9/hook", "secret": secret}
    )
    assert answer.status == 200, answer.json
    [entry] = await entries(client)
    assert entry["action"] == "endpoint.changed"
    assert entry["summary"]["url"] == "http://127.0.0.1:9/hook"
    assert entry["summary"]["secret_set"] is True
    assert secret not in orjson.dumps(entry).decode()


async def test_a_refused_change_records_nothing(client: Client) -> None:
    """A 422 on PUT /v1/endpoint or POST /v1/keys leaves no entry."""
    assert (await client.call("PUT", "/v1/endpoint", {"url": "ftp://x"})).status == 422
    assert (await client.post("/v1/keys", {"name": "x", "scopes": ["root"]})).status == 422
    assert await entries(client) == []


async def test_the_cli_records_its_changes_with_no_key(
    database_url: str, tenant: Tenant, client: Client
) -> None:
    """`shortlink account rate-limit` and `keys create` record entries whose key_id is null."""
    env = {"DATABASE_URL": database_url}
    account = str(tenant.account_id)
    limited = await asyncio.to_thread(
        shortlink, env, "account", "rate-limit", "--account", account, "--per-minute", "500"
    )
    assert limited.returncode == 0, limited.stderr
    made = await asyncio.to_thread(
        shortlink,
        env,
        "keys",
        "create",
        "--account",
        account,
        "--name",
        "ops",
        "--scope",
        "stats:read",
    )
    assert made.returncode == 0, made.stderr
    log = await entries(client)
    assert [(e["action"], e["key_id"], e["client_address"]) for e in log] == [
        ("key.created", None, None),
        ("account.rate_limit_changed", None, None),
    ]
    assert log[1]["summary"] == {"rate_limit_per_minute": 500}
    assert (await client.get("/v1/campaigns")).headers["RateLimit-Limit"] == "500"


async def test_the_log_is_paged_by_cursor(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """limit and next_cursor walk the entries newest first, each once; a bad cursor is a 422."""
    for index in range(5):
        await audit.record(db, tenant.account_id, None, None, "account.disabled", {"n": index})
    seen: list[int] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get("/v1/audit" + query)).json
        seen += [e["summary"]["n"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1, 0]
    for bad in ("x", "1-ab", "9" * 19 + "-", "-1-"):
        assert (await client.get(f"/v1/audit?cursor={bad}")).status == 422, bad


async def test_another_accounts_entries_are_not_shown(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """An account sees only its own entries."""
    other = await db.fetchval("INSERT INTO accounts (name) VALUES ('other') RETURNING id")
    await audit.record(db, other, None, None, "account.disabled", {})
    assert await entries(client) == []


async def test_record_refuses_an_action_name_out_of_form(
    db: asyncpg.Connection, tenant: Tenant
) -> None:
    """An action must be `<thing>.<what happened>` in lower case."""
    with pytest.raises(ValueError, match="not an audit action name"):
        await audit.record(db, tenant.account_id, None, None, "Drop Table", {})


async def test_account_settings_and_erasures_are_recorded(client: Client) -> None:
    """PATCH /v1/account records the settings it left; POST /v1/erasures records the
    receipt's id and counts, never the number it erased."""
    answer = await client.call("PATCH", "/v1/account", {"click_retention_days": 30})
    assert answer.status == 200, answer.json
    erased = await client.post("/v1/erasures", {"phone_number": "+44 7700 900555"})
    assert erased.status == 201, erased.json
    log = await entries(client)
    assert [e["action"] for e in log[:2]] == ["erasure.made", "account.settings_changed"]
    assert log[1]["summary"]["click_retention_days"] == 30
    assert log[0]["summary"] == erased.json
    text = orjson.dumps(log).decode()
    assert "7700900555" not in text
    assert "447700900555" not in text


@pytest.mark.parametrize("api_env_extra", [{"TRUSTED_PROXIES": "127.0.0.1/32"}])
async def test_behind_a_trusted_proxy_the_client_address_is_recorded(
    api_env: dict[str, str], api_env_extra: dict[str, str], tenant: Tenant
) -> None:
    """Behind TRUSTED_PROXIES the entry keeps the client's address from X-Forwarded-For,
    every line of it, not the proxy's."""
    config = ApiConfig.from_env({**api_env, **api_env_extra})
    async with running(create_app(config)) as server, aiohttp.ClientSession() as session:
        client = Client(server, session, tenant.key)
        answer = await client.call(
            "PATCH",
            "/v1/account",
            {"click_retention_days": 31},
            headers={"X-Forwarded-For": "198.51.100.23"},
        )
        assert answer.status == 200, answer.json
        [entry] = (await client.get("/v1/audit")).json["entries"]
    assert entry["client_address"] == "198.51.100.23"
