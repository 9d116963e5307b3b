"""/v1/keys: named, scoped, expiring keys; rotation with an overlap; revocation; scopes."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from shortlink import accounts
from shortlink.accounts import SCOPES
from tests.infra import shortlink, wait_until
from tests.shortlink.api.conftest import Client, Tenant, new_tenant


async def make_key(client: Client, *scopes: str, name: str = "crm", **more: object) -> dict:
    answer = await client.post("/v1/keys", {"name": name, "scopes": list(scopes), **more})
    assert answer.status == 201, answer.json
    return answer.json


async def test_a_new_key_is_shown_once_and_listed_without_its_secret(client: Client) -> None:
    """POST /v1/keys answers the secret with its fields; GET /v1/keys lists the key without
    it, with last_used_at once it was used."""
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    made = await make_key(
        client, "stats:read", "links:read", name="analysts", expires_at=expires.isoformat()
    )
    assert made["name"] == "analysts"
    assert made["scopes"] == ["links:read", "stats:read"]  # in SCOPES' order
    assert made["key"].startswith(made["prefix"])
    assert made["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert made["created_at"].endswith("Z")
    listed = (await client.get("/v1/keys")).json["keys"]
    [row] = [k for k in listed if k["id"] == made["id"]]
    assert made["key"] not in orjson.dumps(listed).decode()
    assert row["last_used_at"] is None
    assert (await client.get("/v1/campaigns", key=made["key"])).status == 200
    listed = (await client.get("/v1/keys")).json["keys"]
    [row] = [k for k in listed if k["id"] == made["id"]]
    assert row["last_used_at"] is not None
    assert row["last_used_at"].endswith("Z")


async def test_a_key_without_the_scope_gets_403_naming_it(client: Client) -> None:
    """A stats:read key reads statistics but is refused link creation with a 403 whose
    standard error body names links:write; nothing is made."""
    made = await make_key(client, "stats:read")
    assert (await client.get("/v1/campaigns", key=made["key"])).status == 200
    refused = await client.post("/v1/links", {"url": "https://example.com/"}, key=made["key"])
    assert refused.status == 403
    assert refused.json["error"]["code"] == "missing_scope"
    assert "links:write" in refused.json["error"]["message"]
    assert refused.json["error"]["details"] == [{"field": "scope", "message": "links:write"}]
    for path in ("/v1/keys", "/v1/audit", "/v1/endpoint"):
        assert (await client.get(path, key=made["key"])).status == 403, path


async def test_existing_keys_keep_every_scope(client: Client, tenant: Tenant) -> None:
    """The key an account was made with (before scopes) holds every scope, and is listed so."""
    listed = (await client.get("/v1/keys")).json["keys"]
    [first] = [k for k in listed if tenant.key.startswith(k["prefix"])]
    assert first["scopes"] == list(SCOPES)
    assert first["name"] is None
    assert (await client.get("/v1/audit")).status == 200


async def test_a_revoked_key_stops_at_once(client: Client, db: asyncpg.Connection) -> None:
    """DELETE /v1/keys/{id} revokes: the key is a 401 from then on and no longer listed;
    revoking again, or an id that is not a key of the account, is a 404."""
    made = await make_key(client, "links:read")
    assert (await client.call("DELETE", f"/v1/keys/{made['id']}")).status == 204
    assert (await client.get("/v1/links/AbCdEf1", key=made["key"])).status == 401
    ids = [k["id"] for k in (await client.get("/v1/keys")).json["keys"]]
    assert made["id"] not in ids
    assert (await client.call("DELETE", f"/v1/keys/{made['id']}")).status == 404
    other = await new_tenant(db)
    others = await db.fetchval("SELECT id FROM api_keys WHERE account_id = $1", other.account_id)
    for key_id in (str(others), "0", "-1", "x", "9" * 40, "1e3"):
        assert (await client.call("DELETE", f"/v1/keys/{key_id}")).status == 404, key_id
    assert (await client.get("/v1/campaigns", key=other.key)).status == 200


async def test_rotation_keeps_the_old_secret_working_for_the_overlap(client: Client) -> None:
    """POST /v1/keys/{id}/rotate: a new secret with the same name and scopes; the old one
    works until overlap_seconds have passed, then is a 401."""
    made = await make_key(client, "stats:read", name="backend")
    rotated = await client.post(f"/v1/keys/{made['id']}/rotate", {"overlap_seconds": 2})
    assert rotated.status == 201, rotated.json
    new = rotated.json
    assert new["key"] != made["key"]
    assert new["id"] != made["id"]
    assert (new["name"], new["scopes"], new["replaces"]) == ("backend", ["stats:read"], made["id"])
    assert (await client.get("/v1/campaigns", key=made["key"])).status == 200
    assert (await client.get("/v1/campaigns", key=new["key"])).status == 200
    listed = {k["id"]: k for k in (await client.get("/v1/keys")).json["keys"]}
    assert listed[made["id"]]["revokes_at"] is not None

    async def old_refused() -> bool:
        return (await client.get("/v1/campaigns", key=made["key"])).status == 401

    await wait_until(old_refused, within=10)
    assert (await client.get("/v1/campaigns", key=new["key"])).status == 200


async def test_rotation_without_overlap_stops_the_old_key_at_once(client: Client) -> None:
    """Rotating with no body (overlap 0) revokes the old secret now."""
    made = await make_key(client, "stats:read")
    rotated = await client.post(f"/v1/keys/{made['id']}/rotate")
    assert rotated.status == 201
    assert (await client.get("/v1/campaigns", key=made["key"])).status == 401
    assert (await client.get("/v1/campaigns", key=rotated.json["key"])).status == 200
    assert (await client.post(f"/v1/keys/{made['id']}/rotate")).status == 404


async def test_an_expired_key_is_refused(client: Client, db: asyncpg.Connection) -> None:
    """A key past its expires_at is a 401 and is no longer listed."""
    made = await make_key(client, "stats:read")
    await db.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", made["id"]
    )
    assert (await client.get("/v1/campaigns", key=made["key"])).status == 401
    assert made["id"] not in [k["id"] for k in (await client.get("/v1/keys")).json["keys"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["stats:read"]}, "name"),
        ({"name": "", "scopes": ["stats:read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["stats:read"]}, "name"),
        ({"name": "a\x00b", "scopes": ["stats:read"]}, "name"),
        ({"name": "x"}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": "stats:read"}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes[0]"),
        ({"name": "x", "scopes": ["stats:read"] * 8}, "scopes"),
        ({"name": "x", "scopes": [1]}, "scopes"),
        ({"name": "x", "scopes": ["stats:read"], "expires_at": "tomorrow"}, "expires_at"),
        (
            {"name": "x", "scopes": ["stats:read"], "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
        ),
        (
            {"name": "x", "scopes": ["stats:read"], "expires_at": "9999-01-01T00:00:00Z"},
            "expires_at",
        ),
        ({"name": "x", "scopes": ["stats:read"], "expires_at": 17}, "expires_at"),
        ({"name": "x", "scopes": ["stats:read"], "admin": True}, "admin"),
    ],
)
async def test_a_bad_key_request_is_a_422_that_makes_nothing(
    client: Client, db: asyncpg.Connection, tenant: Tenant, body: dict, field: str
) -> None:
    """Each bad field is named in a 422 and no key is made."""
    before = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    answer = await client.post("/v1/keys", body)
    assert answer.status == 422, answer.json
    assert field in [d["field"] for d in answer.json["error"]["details"]]
    after = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    assert after == before


@pytest.mark.parametrize("overlap", [-1, 604_801, 1.5, "10", True, 2**62])
async def test_a_bad_overlap_is_a_422(client: Client, overlap: object) -> None:
    """overlap_seconds must be a whole number of seconds from 0 to a week."""
    made = await make_key(client, "stats:read")
    answer = await client.post(f"/v1/keys/{made['id']}/rotate", {"overlap_seconds": overlap})
    assert answer.status == 422
    assert (await client.get("/v1/campaigns", key=made["key"])).status == 200


async def test_random_bytes_to_the_key_routes_change_nothing(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Random bodies are 400, 415 or 422, never a 500, and make no key."""
    made = await make_key(client, "stats:read")
    before = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    for _ in range(20):
        body = os.urandom(64)
        for path in ("/v1/keys", f"/v1/keys/{made['id']}/rotate"):
            answer = await client.post(path, raw=body)
            assert answer.status in (400, 415, 422), (path, answer.status)
    after = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    assert after == before


async def test_an_account_has_at_most_a_hundred_working_keys(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Past MAX_KEYS_PER_ACCOUNT working keys, POST /v1/keys is a 409."""
    for _ in range(accounts.MAX_KEYS_PER_ACCOUNT - 1):  # the account's first key counts
        async with db.transaction():
            await accounts.create_key(
                db, tenant.account_id, name="bulk", scopes=["stats:read"], expires_at=None
            )
    answer = await client.post("/v1/keys", {"name": "one more", "scopes": ["stats:read"]})
    assert answer.status == 409


async def test_rotating_counts_against_the_cap(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """A rotated key still works during its overlap, so rotating at the cap is a 409 too
    (rotation cannot make keys, nor rate-limit windows, without bound)."""
    made = await make_key(client, "stats:read")
    for _ in range(accounts.MAX_KEYS_PER_ACCOUNT - 2):  # the account's first key and `made`
        async with db.transaction():
            await accounts.create_key(
                db, tenant.account_id, name="bulk", scopes=["stats:read"], expires_at=None
            )
    answer = await client.post(f"/v1/keys/{made['id']}/rotate", {"overlap_seconds": 3600})
    assert answer.status == 409
    listed = (await client.get("/v1/keys")).json["keys"]
    assert len(listed) == accounts.MAX_KEYS_PER_ACCOUNT


async def test_a_key_gives_only_scopes_it_holds(client: Client) -> None:
    """A keys:admin key cannot make a key with more, nor rotate or revoke a key holding a
    scope it lacks (403 naming it); keys within its own scopes it manages."""
    admin = await make_key(client, "keys:admin", "stats:read", name="admin")
    own = {"key": admin["key"]}
    more = await client.call(
        "POST", "/v1/keys", {"name": "x", "scopes": ["account:admin"]}, key=own["key"]
    )
    assert more.status == 403
    assert more.json["error"]["code"] == "missing_scope"
    assert "account:admin" in more.json["error"]["message"]
    master = (await client.get("/v1/keys")).json["keys"]
    strongest = next(k for k in master if "account:admin" in k["scopes"])
    rotated = await client.call(
        "POST", f"/v1/keys/{strongest['id']}/rotate", {"overlap_seconds": 0}, key=own["key"]
    )
    assert rotated.status == 403
    revoked = await client.call("DELETE", f"/v1/keys/{strongest['id']}", key=own["key"])
    assert revoked.status == 403
    weaker = await client.call(
        "POST", "/v1/keys", {"name": "reader", "scopes": ["stats:read"]}, key=own["key"]
    )
    assert weaker.status == 201
    gone = await client.call("DELETE", f"/v1/keys/{weaker.json['id']}", key=own["key"])
    assert gone.status == 204
    assert (await client.get("/v1/keys")).status == 200  # the strongest key still works


async def test_the_cli_creates_and_lists_keys(
    database_url: str, tenant: Tenant, db: asyncpg.Connection, client: Client
) -> None:
    """`shortlink keys create` prints the new key once; `keys list` shows it without it; a
    bad scope exits 2 and makes nothing."""
    env = {"DATABASE_URL": database_url}
    args = ("keys", "create", "--account", str(tenant.account_id), "--name", "sender")
    made = await asyncio.to_thread(
        shortlink, env, *args, "--scope", "links:write", "--expires-in-days", "7"
    )
    assert made.returncode == 0, made.stderr
    key = orjson.loads(made.stdout)
    assert key["scopes"] == ["links:write"]
    assert key["expires_at"].endswith("Z")
    assert (
        await client.post("/v1/links", {"url": "https://example.com/"}, key=key["key"])
    ).status == 201
    listed = await asyncio.to_thread(
        shortlink, env, "keys", "list", "--account", str(tenant.account_id)
    )
    assert listed.returncode == 0, listed.stderr
    assert key["id"] in [k["id"] for k in orjson.loads(listed.stdout)]
    assert key["key"] not in listed.stdout
    bad = await asyncio.to_thread(shortlink, env, *args, "--scope", "root")
    assert bad.returncode == 2
    count = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE account_id = $1", tenant.account_id
    )
    assert count == 2
