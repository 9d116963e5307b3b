"""The API application: the routes it serves are the ones docs/api.md lists."""

from __future__ import annotations

import re
from pathlib import Path

from shortlink.api.app import create_app
from shortlink.api.config import ApiConfig

REFERENCE = Path(__file__).parents[3] / "docs" / "api.md"
# A route in the first cell of a table row: `METHOD /path`, a query string after it.
_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)[^`]*`")


def documented_routes() -> set[tuple[str, str]]:
    """Every (method, path) named in the first column of docs/api.md's tables."""
    return {
        (method, path)
        for line in REFERENCE.read_text().splitlines()
        if line.startswith("| `")
        for method, path in _ROUTE.findall(line.split(" | ")[0])
    }


def test_every_route_is_listed_in_docs_api_md(api_env: dict[str, str]) -> None:
    """Each route and method the API serves is a row of docs/api.md, and nothing more (the
    dashboard's pages are docs/dashboard.md's)."""
    app = create_app(ApiConfig.from_env(api_env))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith("/dashboard")
    }
    assert len(served) > 20
    assert documented_routes() == served
