"""The scope table covers every route, the OpenAPI document states it, and the middleware
enforces it for keys and dashboard sessions alike."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from shortlink.accounts import SCOPES
from shortlink.api import scopes
from shortlink.api.app import create_app, openapi_document
from shortlink.api.config import ApiConfig
from tests.infra import running
from tests.shortlink.api.conftest import Client


def _served(api_env: dict[str, str]) -> set[tuple[str, str]]:
    app = create_app(ApiConfig.from_env(api_env))
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"
    }


def test_every_route_has_a_scope_and_the_table_names_no_other(api_env: dict[str, str]) -> None:
    """Each /v1 route the API serves is in shortlink.api.scopes.ROUTES (a new route without
    a scope fails here), and every entry is a route it serves, with a known scope."""
    assert _served(api_env) == set(scopes.ROUTES)
    assert {s for s in scopes.ROUTES.values() if s is not None} <= set(SCOPES)


def test_the_document_names_each_operations_scope() -> None:
    """Each keyed operation's `security` and `x-scope` name the table's scope; the public
    ones need no key; every keyed operation documents 403 and 429."""
    document = orjson.loads(openapi_document())
    for (method, path), scope in scopes.ROUTES.items():
        operation = document["paths"][path][method.lower()]
        if scope is None:
            assert operation["security"] == [], path
            continue
        assert operation["x-scope"] == scope, path
        assert {"bearer": [scope]} in operation["security"], path
        assert {"403", "429"} <= set(operation["responses"]), path


async def test_a_route_missing_from_the_table_is_open_to_no_key(
    api_env: dict[str, str], client: Client
) -> None:
    """A /v1 route added without a scope is refused (403) to every key, all-powerful ones too."""
    app = create_app(ApiConfig.from_env(api_env))

    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"leaked": True})

    app.router.add_get("/v1/unscoped", secret)
    async with running(app) as server:
        answer = await client.session.get(
            f"{server.url}/v1/unscoped", headers={"Authorization": f"Bearer {client.key}"}
        )
        assert answer.status == 403
        assert (await answer.json())["error"]["code"] == "missing_scope"


KEYED = sorted(route for route, scope in scopes.ROUTES.items() if scope is not None)


@pytest.mark.parametrize(("method", "route"), KEYED)
async def test_a_key_holding_every_other_scope_is_refused(
    client: Client, method: str, route: str
) -> None:
    """For each route, a key with every scope but the one it needs gets the 403 naming it."""
    needed = scopes.ROUTES[method, route]
    others = [scope for scope in SCOPES if scope != needed]
    made = await client.post("/v1/keys", {"name": "all but one", "scopes": others})
    path = (
        route.replace("{token}", "AbCdEf1")
        .replace("{client_identifier}", "spring")
        .replace("{request_identifier}", "5b0f3c1e-8d2a-4f6b-9c3e-2a7d1e4f8b90")
        .replace("{key_id}", "1")
        .replace("{domain}", "go.brand.example")
        .replace("{erasure_id}", "1")
    )
    answer = await client.call(
        method, path, {} if method in ("POST", "PUT", "PATCH") else None, key=made.json["key"]
    )
    assert answer.status == 403, (method, path, answer.status)
    assert answer.json["error"]["details"] == [{"field": "scope", "message": needed}]
