"""The databases benchmarks work in: created on a server, seeded with links, dropped."""

from __future__ import annotations

import asyncio

import asyncpg

from shortlink import accounts, rules, schema
from shortlink.db import with_database
from shortlink.links import NewLink, create_links


def create_database(server_url: str, name: str) -> str:
    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


async def seed(database_url: str, count: int) -> list[tuple[str, str]]:
    links, _ = await seed_account(database_url, count)
    return links


async def seed_account(database_url: str, count: int) -> tuple[list[tuple[str, str]], str]:
    """A `bench` account with `count` links: their (token, target URL), and its API key."""
    conn = await asyncpg.connect(database_url)
    try:
        await schema.migrate(conn)
        account = await accounts.create_account(conn, "bench")
        specs = [
            NewLink(
                f"https://shop.example.com/offer?c=spring&r={i}",
                phone_number=f"4477{i:08d}",
                client_ref=f"msg-{i}",
                client_identifier="bench",
            )
            for i in range(count)
        ]
        created = await create_links(conn, account.account_id, specs)
    finally:
        await conn.close()
    return [(c.token, s.target_url) for c, s in zip(created, specs, strict=True)], account.api_key


# Four rules none of which an iPhone without Accept-Language on 127.0.0.1 matches: a tap
# evaluates all four (the most a tap of such a link costs) and goes to the link's url.
FOUR_RULES = [
    {"when": {"os": ["Android"]}, "url": "https://play.google.com/store/apps/details?id=x"},
    {"when": {"language": ["es"]}, "url": "https://shop.example.com/es"},
    {"when": {"country": ["ES"]}, "url": "https://shop.example.com/es"},
    {"when": {"device_type": ["desktop"]}, "url": "https://shop.example.com/desktop"},
]


async def seed_rules(database_url: str, count: int) -> list[tuple[str, str]]:
    """`count` links with FOUR_RULES in a `bench-rules` account: their (token, target URL)."""
    conn = await asyncpg.connect(database_url)
    try:
        account = await accounts.create_account(conn, "bench-rules")
        text = rules.canonical(FOUR_RULES)
        specs = [
            NewLink(
                f"https://shop.example.com/offer?c=rules&r={i}",
                phone_number=f"4478{i:08d}",
                client_ref=f"msg-{i}",
                client_identifier="bench-rules",
                rules=text,
            )
            for i in range(count)
        ]
        created = await create_links(conn, account.account_id, specs)
    finally:
        await conn.close()
    return [(c.token, s.target_url) for c, s in zip(created, specs, strict=True)]
