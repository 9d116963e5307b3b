"""Rate limits per key: the headers on every answer, 429 past the limit, one count shared
by every API worker (two API apps on one database here, as two workers or two hosts)."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from shortlink import accounts
from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig
from tests.infra import running
from tests.shortlink.api.conftest import Client, Tenant


async def test_every_answer_carries_the_rate_limit_headers(client: Client) -> None:
    """A 200, a 404 and a 422 made with a key all carry RateLimit-Limit, -Remaining and
    -Reset, Remaining going down by one a request; a 401 carries none."""
    seen = []
    for path in ("/v1/campaigns", "/v1/links/AbCdEf1", "/v1/campaigns?limit=0"):
        answer = await client.get(path)
        assert answer.status in (200, 404, 422)
        assert answer.headers["RateLimit-Limit"] == "1200"
        assert 1 <= int(answer.headers["RateLimit-Reset"]) <= 60
        seen.append(int(answer.headers["RateLimit-Remaining"]))
    assert seen == [seen[0], seen[0] - 1, seen[0] - 2]
    refused = await client.get("/v1/campaigns", key=None)
    assert refused.status == 401
    assert "RateLimit-Limit" not in refused.headers


async def test_past_the_limit_a_429_with_retry_after_does_nothing(
    client: Client, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """With the account's limit at 3 a minute, the 4th request is a 429 with Retry-After and
    the standard error body, and makes no link; another key of the account has its own count."""
    assert await accounts.set_rate_limit(db, tenant.account_id, 3)
    other = (await client.post("/v1/keys", {"name": "other", "scopes": ["links:write"]})).json
    for _ in range(2):
        assert (await client.get("/v1/campaigns")).status == 200
    answer = await client.post("/v1/links", {"url": "https://example.com/"})
    assert answer.status == 429
    assert answer.json["error"]["code"] == "rate_limited"
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert answer.headers["RateLimit-Remaining"] == "0"
    assert answer.headers["RateLimit-Limit"] == "3"
    links = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", tenant.account_id)
    assert links == 0
    made = await client.post("/v1/links", {"url": "https://example.com/"}, key=other["key"])
    assert made.status == 201
    assert made.headers["RateLimit-Remaining"] == "2"


async def test_the_limit_holds_across_api_workers(
    api_env: dict[str, str], db: asyncpg.Connection, tenant: Tenant
) -> None:
    """Two API apps on the same database (two workers, or two hosts) share one count: with a
    limit of 10, 20 concurrent requests spread over both get exactly 10 answers of 200."""
    assert await accounts.set_rate_limit(db, tenant.account_id, 10)
    config = ApiConfig.from_env(api_env)
    async with (
        running(create_app(config)) as first,
        running(create_app(config, worker_index=1)) as second,
        aiohttp.ClientSession() as session,
    ):

        async def call(index: int) -> int:
            server = first if index % 2 else second
            async with session.get(
                f"{server.url}/v1/campaigns", headers={"Authorization": f"Bearer {tenant.key}"}
            ) as response:
                return response.status

        statuses = await asyncio.gather(*(call(i) for i in range(20)))
    assert sorted(statuses) == [200] * 10 + [429] * 10


async def test_a_bad_key_is_not_counted(
    client: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    """Requests with an unknown key are 401s that count against no key."""
    for _ in range(3):
        assert (await client.get("/v1/campaigns", key=accounts.new_api_key())).status == 401
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE account_id = $1", tenant.account_id)
    assert await db.fetchval("SELECT used FROM api_key_windows WHERE key_id = $1", key_id) is None
