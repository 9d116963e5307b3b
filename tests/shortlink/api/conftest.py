"""API fixtures: the API on a free port, accounts with keys, a client that checks the contract."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from shortlink import accounts
from shortlink.api.app import create_app, openapi_document
from shortlink.api.config import ApiConfig
from tests.dnsserver import DnsServer
from tests.infra import RunningServer, running, unique_name

SHORT_DOMAIN = "sl.test"
CONTRACT = OpenAPI.from_dict(orjson.loads(openapi_document()))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """Calls the API as one account and checks every response against the OpenAPI contract."""

    def __init__(self, server: RunningServer, session: aiohttp.ClientSession, key: str | None):
        self.server = server
        self.session = session
        self.key = key

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        key: str | None = "own",
    ) -> Answer:
        sent = dict(headers or {})
        use = self.key if key == "own" else key
        if use is not None:
            sent["Authorization"] = f"Bearer {use}"
        data = raw if raw is not None else (orjson.dumps(json) if json is not None else None)
        if data is not None and "Content-Type" not in sent:
            sent["Content-Type"] = "application/json"
        # Large bodies as a stream: aiohttp warns about big raw bytes.
        payload = io.BytesIO(data) if data is not None and len(data) > 1 << 20 else data
        async with self.session.request(
            method, self.server.url + path, data=payload, headers=sent
        ) as r:
            answer = Answer(r.status, dict(r.headers), await r.read())
        check_contract(method, path, sent, data, answer)
        return answer

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Answer:
        return await self.call("POST", path, json, **kw)


async def raw_request(
    server: RunningServer, method: str, path: bytes, headers: list[bytes], body: bytes = b""
) -> Answer:
    """Send one request byte for byte (headers that aiohttp's client would refuse to send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        head = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
        head += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await reader.readline()
        fields: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip()] = value.strip()
        answer = Answer(int(status_line.split()[1]), fields, await reader.read())
    finally:
        writer.close()
        await writer.wait_closed()
    return answer


def check_contract(
    method: str, path: str, headers: dict[str, str], data: bytes | None, answer: Answer
) -> None:
    """The response must be one the OpenAPI document describes for this route and status."""
    parts = urlsplit(path)
    request = MockRequest(
        "http://127.0.0.1:8081",
        method.lower(),
        parts.path,
        args=dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair),
        headers=headers,
        data=data,
        content_type=headers.get("Content-Type", "application/json"),
    )
    content_type = answer.headers.get("Content-Type", "application/json").split(";")[0]
    response = MockResponse(
        data=answer.body,
        status_code=answer.status,
        content_type=content_type,
        headers=answer.headers,
    )
    CONTRACT.validate_response(request, response)


@pytest.fixture
def api_env(database_url: str, dns: DnsServer) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "DNS_RESOLVERS": dns.resolvers,
        "SHORT_DOMAIN": SHORT_DOMAIN,
        "DATABASE_POOL_SIZE": "4",
        "ALLOW_PRIVATE_ENDPOINTS": "true",
    }


@pytest.fixture
async def api_server(api_env: dict[str, str]) -> AsyncIterator[RunningServer]:
    async with running(create_app(ApiConfig.from_env(api_env))) as server:
        yield server


@dataclass
class Tenant:
    account_id: int
    key: str


async def new_tenant(db: asyncpg.Connection) -> Tenant:
    account = await accounts.create_account(db, unique_name("tenant"))
    return Tenant(account.account_id, account.api_key)


@pytest.fixture
async def tenant(db: asyncpg.Connection) -> Tenant:
    """An account and its API key."""
    return await new_tenant(db)


@pytest.fixture
async def client(api_server: RunningServer, tenant: Tenant) -> AsyncIterator[Client]:
    """The API as `tenant`."""
    async with aiohttp.ClientSession() as session:
        yield Client(api_server, session, tenant.key)
