"""CSV files of a campaign: its clicks and its recipients, streamed.

`GET /v1/campaigns/{client_identifier}/clicks.csv` and `.../recipients.csv`
take a Bearer key or the dashboard's session cookie. Rows are read a batch at a
time by keyset (shortlink.campaigns.exports) and written as they come, so memory
stays the same at ten million clicks. RFC 4180: a header row, CRLF line ends,
fields quoted when they hold a comma, a quote or a line break. A text field that
a spreadsheet would take for a formula (it starts with `=`, `+`, `-`, `@`, a tab
or a carriage return) is prefixed with `'`: user agents and referers come from
whoever taps (OWASP's CSV injection advice).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from shortlink.api.auth import ACCOUNT_ID
from shortlink.api.campaigns import campaign_of_path
from shortlink.api.dashboard.sessions import CAMPAIGN_SCOPE
from shortlink.api.errors import not_found
from shortlink.api.keys import API_CONFIG
from shortlink.api.present import short_url
from shortlink.campaigns import exports, summaries
from shortlink.pool import READ_POOL
from shortlink.timestamps import rfc3339

RECIPIENT_COLUMNS = (
    "tracking_url_id",
    "token",
    "short_url",
    "phone_number",
    "client_ref",
    "created_at",
    "first_tap_at",
    "taps",
    "bot_taps",
    "device_type",
    "os",
    "browser",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def cell(value: Any) -> Any:
    """A value as the CSV file shows it (times in RFC 3339 UTC, formulas defused)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return str(value)


def encode_rows(rows: Iterable[Iterable[Any]]) -> bytes:
    """Rows as RFC 4180 CSV, UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([cell(value) for value in row] for row in rows)
    return out.getvalue().encode()


def _campaign(request: web.Request) -> str:
    name = campaign_of_path(request)
    scope = request.get(CAMPAIGN_SCOPE)
    if scope is not None and scope != name:
        raise not_found("campaign")
    return name


async def _exists(request: web.Request, name: str) -> None:
    if not await summaries.exists(request.app[READ_POOL], request[ACCOUNT_ID], name):
        raise not_found("campaign")


async def _stream(
    request: web.Request,
    name: str,
    what: str,
    header: tuple[str, ...],
    batches: AsyncIterator[list[Any]],
    row: Callable[[Any], Iterable[Any]],
) -> web.StreamResponse:
    safe = _UNSAFE_FILENAME.sub("_", name).strip("._") or "campaign"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8; header=present",
            "Content-Disposition": (
                f'attachment; filename="{safe}-{what}.csv"; '
                f"filename*=UTF-8''{quote(name, safe='')}-{what}.csv"
            ),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    await response.write(encode_rows([header]))
    async for batch in batches:
        await response.write(encode_rows(row(item) for item in batch))
    await response.write_eof()
    return response


async def clicks_csv(request: web.Request) -> web.StreamResponse:
    """GET /v1/campaigns/{client_identifier}/clicks.csv: every click, oldest first."""
    name = _campaign(request)
    await _exists(request, name)
    batches = exports.all_clicks(request.app[READ_POOL], request[ACCOUNT_ID], name)
    return await _stream(request, name, "clicks", exports.CLICK_COLUMNS, batches, lambda r: r)


async def recipients_csv(request: web.Request) -> web.StreamResponse:
    """GET /v1/campaigns/{client_identifier}/recipients.csv: one row per link, by phone number."""
    name = _campaign(request)
    await _exists(request, name)
    config = request.app[API_CONFIG]
    batches = exports.all_recipients(request.app[READ_POOL], request[ACCOUNT_ID], name)

    def row(item: dict[str, Any]) -> list[Any]:
        values = {**item, "short_url": short_url(config, item["token"])}
        return [values[column] for column in RECIPIENT_COLUMNS]

    return await _stream(request, name, "recipients", RECIPIENT_COLUMNS, batches, row)
