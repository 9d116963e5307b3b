"""CSV files (shortlink/api/exports.py): RFC 4180, streamed in batches, key or cookie, isolation."""

from __future__ import annotations

import csv
import io

import aiohttp
import asyncpg
import pytest

from forwarder.recorder import record
from shortlink.api.exports import RECIPIENT_COLUMNS, cell, encode_rows
from shortlink.campaigns import exports
from tests.clicks import clicks, make_links
from tests.infra import RunningServer
from tests.shortlink.api.conftest import Tenant, new_tenant
from tests.shortlink.api.dashboard.conftest import events
from tests.shortlink.api.dashboard.test_sessions import COOKIE, sign_in

AWKWARD_AGENT = 'Mozilla/5.0 (iPhone; "quoted", comma)\nsecond line'


def test_rows_are_rfc_4180() -> None:
    """CRLF after each row; commas, quotes and line breaks quoted; formulas defused."""
    data = encode_rows([["a,b", 'say "hi"', "two\nlines", "=1+1", "-2", None, True, 3]])
    assert data == b'"a,b","say ""hi""","two\nlines",\'=1+1,\'-2,,true,3\r\n'
    assert cell("plain") == "plain"


async def csv_get(
    server: RunningServer, http: aiohttp.ClientSession, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with http.get(server.url + path, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def test_clicks_csv_with_a_key(
    dashboard: RunningServer,
    http: aiohttp.ClientSession,
    db: asyncpg.Connection,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every click, oldest first, a header row, streamed over several batches."""
    monkeypatch.setattr(exports, "EXPORT_BATCH", 2)
    made = await make_links(db, tenant.account_id, 5, client_identifier="export")
    start = made[0].created_at_ms / 1000
    batch = []
    for i, link in enumerate(made):
        batch += events(clicks([link], at=start + i, user_agent=AWKWARD_AGENT))
    await record(db, batch, batch_size=100)
    status, headers, body = await csv_get(
        dashboard,
        http,
        "/v1/campaigns/export/clicks.csv",
        {"Authorization": f"Bearer {tenant.key}"},
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["Transfer-Encoding"] == "chunked"
    assert 'filename="export-clicks.csv"' in headers["Content-Disposition"]
    assert body.count(b"\r\n") == 6
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert rows[0] == list(exports.CLICK_COLUMNS)
    table = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [int(row["tracking_url_id"]) for row in table] == [link.id for link in made]
    assert {row["user_agent"] for row in table} == {AWKWARD_AGENT}
    assert table[0]["clicked_at"] < table[-1]["clicked_at"]
    assert all(row["clicked_at"].endswith("Z") for row in table)  # RFC 3339, as the API


async def test_recipients_csv_with_the_session_cookie(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """The dashboard's cookie downloads the recipients: one row per link, taps counted."""
    made = await make_links(db, tenant.account_id, 3, client_identifier="people")
    await record(db, events(clicks(made[:1])) + events(clicks(made[:1])), batch_size=100)
    cookie = await sign_in(dashboard, http, tenant.key)
    status, _, body = await csv_get(
        dashboard, http, "/v1/campaigns/people/recipients.csv", {"Cookie": f"{COOKIE}={cookie}"}
    )
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    assert list(rows[0]) == list(RECIPIENT_COLUMNS)
    assert [row["phone_number"] for row in rows] == [link.phone_number for link in made]
    assert (rows[0]["taps"], rows[0]["os"], rows[1]["taps"]) == ("2", "iOS", "0")
    assert rows[0]["short_url"] == f"http://sl.test/{made[0].token}"


async def test_csv_needs_a_key_or_session_of_the_account(
    dashboard: RunningServer, http: aiohttp.ClientSession, db: asyncpg.Connection, tenant: Tenant
) -> None:
    """No credentials: 401; a forged cookie: 401; another account's campaign: 404."""
    other = await new_tenant(db)
    await make_links(db, other.account_id, 1, client_identifier="theirs")
    path = "/v1/campaigns/theirs/clicks.csv"
    assert (await csv_get(dashboard, http, path, {}))[0] == 401
    assert (await csv_get(dashboard, http, path, {"Cookie": f"{COOKIE}=forged"}))[0] == 401
    status, headers, _ = await csv_get(
        dashboard, http, path, {"Authorization": f"Bearer {tenant.key}"}
    )
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    cookie = await sign_in(dashboard, http, tenant.key)
    assert (await csv_get(dashboard, http, path, {"Cookie": f"{COOKIE}={cookie}"}))[0] == 404
    status, _, _ = await csv_get(
        dashboard,
        http,
        path.replace("clicks", "recipients"),
        {"Authorization": f"Bearer {other.key}"},
    )
    assert status == 200
