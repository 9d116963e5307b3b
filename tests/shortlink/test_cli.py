"""`shortlink link create` checks its URL and phone number as POST /v1/links does."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import asyncpg
import orjson
import pytest

from shortlink import accounts, domains
from tests.infra import shortlink, unique_name


async def test_link_create_normalises_like_the_api(
    database_url: str, account_id: int, db: asyncpg.Connection
) -> None:
    """The stored target is normalised and the number is digits, its (0) trunk prefix dropped."""
    made = await asyncio.to_thread(
        shortlink,
        {"DATABASE_URL": database_url},
        "link",
        "create",
        "--account",
        str(account_id),
        "--url",
        "HTTPS://Bücher.example/straße",
        "--phone-number",
        "+44 (0)7700 900123",
    )
    assert made.returncode == 0, made.stderr
    token = orjson.loads(made.stdout)["token"]
    row = await db.fetchrow("SELECT target_url, phone_number FROM links WHERE token = $1", token)
    assert tuple(row) == ("https://xn--bcher-kva.example/stra%C3%9Fe", "447700900123")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--url", "javascript:alert(1)", "--url: must start with http:// or https://"),
        ("--url", "https://u:p@example.com/", "--url: must not contain a user name"),
        ("--url", "https://sl.test/AbC1234", "--url: must not point at the short domain"),
        ("--phone-number", "07700 900123", "--phone-number: is a national number"),
        ("--phone-number", "+44 7700 9001", "--phone-number: has 8 digits after"),
        ("--client-ref", "m\x01" + "x" * 300, "--client-ref: must be at most 200"),
        ("--expires-in-days", "366", "--expires-in-days must be from 1 to 365"),
        ("--expires-in-days", "0", "--expires-in-days must be from 1 to 365"),
    ],
)
async def test_link_create_refuses_what_the_api_refuses(
    database_url: str, account_id: int, db: asyncpg.Connection, option: str, value: str, says: str
) -> None:
    """A URL or number the API would refuse exits 2 naming the option, and creates nothing."""
    args = {"--url": "https://example.com/", "--phone-number": "+447700900123", option: value}
    refused = await asyncio.to_thread(
        shortlink,
        {"DATABASE_URL": database_url, "SHORT_DOMAIN": "SL.test"},
        "link",
        "create",
        "--account",
        str(account_id),
        *(part for pair in args.items() for part in pair),
    )
    assert refused.returncode == 2, refused.stdout
    assert says in refused.stderr
    count = await db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", account_id)
    assert count == 0


async def test_link_create_lives_the_accounts_lifetime_unless_told(
    database_url: str, account_id: int, db: asyncpg.Connection
) -> None:
    """Without --expires-in-days a link lives the account's link_lifetime_days."""
    await db.execute("UPDATE accounts SET link_lifetime_days = 3 WHERE id = $1", account_id)
    lifetimes = []
    for extra in ([], ["--expires-in-days", "365"]):
        made = await asyncio.to_thread(
            shortlink,
            {"DATABASE_URL": database_url},
            "link",
            "create",
            "--account",
            str(account_id),
            "--url",
            "https://example.com/",
            *extra,
        )
        assert made.returncode == 0, made.stderr
        token = orjson.loads(made.stdout)["token"]
        days = await db.fetchval(
            "SELECT extract(epoch FROM expires_at - created_at) / 86400 FROM links "
            "WHERE token = $1",
            token,
        )
        lifetimes.append(round(float(days)))
    assert lifetimes == [3, 365]


def test_no_module_imports_the_cli() -> None:
    """The services and the forwarder's command share code through modules, never the CLI."""
    root = Path(__file__).parents[2]
    importers = []
    for path in [*(root / "shortlink").rglob("*.py"), *(root / "forwarder").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            ) + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if "shortlink.cli" in names:
                importers.append(str(path.relative_to(root)))
    assert importers == []


async def test_domain_commands_add_list_and_remove(
    database_url: str, account_id: int, db: asyncpg.Connection
) -> None:
    """`domain add --verified` makes a served domain (audited), `list` shows it, `remove`
    removes every account's claim of it; a bad name or a taken one is refused."""
    env = {"DATABASE_URL": database_url, "SHORT_DOMAIN": "sl.test"}
    name = f"cli{account_id}.Brand.Example"
    # Another account's unverified claim does not stand in the way.
    claimant = (await accounts.create_account(db, unique_name("claimant"))).account_id
    await domains.add(db, claimant, name.lower())
    added = await asyncio.to_thread(
        shortlink, env, "domain", "add", "--account", str(account_id), "--verified", name
    )
    assert added.returncode == 0, added.stderr
    shown = orjson.loads(added.stdout)
    assert (shown["domain"], shown["verified"], shown["account_id"]) == (
        name.lower(),
        True,
        account_id,
    )
    again = await asyncio.to_thread(
        shortlink, env, "domain", "add", "--account", str(account_id), name
    )
    assert again.returncode != 0
    assert "already" in again.stderr
    for bad in ("sl.test", "127.0.0.1", "go.brand.example:443"):
        refused = await asyncio.to_thread(
            shortlink, env, "domain", "add", "--account", str(account_id), bad
        )
        assert refused.returncode == 2, bad
    listed = await asyncio.to_thread(shortlink, env, "domain", "list", "--account", str(account_id))
    assert [d["domain"] for d in orjson.loads(listed.stdout)] == [name.lower()]
    removed = await asyncio.to_thread(shortlink, env, "domain", "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert await db.fetchval("SELECT count(*) FROM domains WHERE name = $1", name.lower()) == 0
    actions = await db.fetch(
        "SELECT action FROM audit_log WHERE account_id = $1 ORDER BY id", account_id
    )
    assert [row["action"] for row in actions] == ["domain.added", "domain.removed"]
    claimed = await db.fetchval(
        "SELECT action FROM audit_log WHERE account_id = $1 ORDER BY id DESC LIMIT 1", claimant
    )
    assert claimed == "domain.removed"
    missing = await asyncio.to_thread(shortlink, env, "domain", "remove", name)
    assert missing.returncode == 1
