"""The OpenAPI contract: valid, served, and naming every route the API has."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from openapi_spec_validator import validate

from shortlink.api.app import create_app, openapi_document
from shortlink.api.config import ApiConfig
from tests.shortlink.api.conftest import Client

DOCUMENT = Path(__file__).parents[3] / "shortlink" / "api" / "openapi.json"


def test_document_is_valid_openapi() -> None:
    """The document in the repository passes openapi-spec-validator."""
    validate(json.loads(DOCUMENT.read_text()))


async def test_document_is_served_without_a_key(client: Client) -> None:
    """GET /v1/openapi.json needs no key and returns the repository's document."""
    answer = await client.get("/v1/openapi.json", key=None)
    assert answer.status == 200
    assert answer.json == orjson.loads(openapi_document())


def test_every_route_is_in_the_document(api_env: dict[str, str]) -> None:
    """Each /v1 route and method the application serves is described, and nothing more."""
    app = create_app(ApiConfig.from_env(api_env))
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"
    }
    documented = {
        (path, method)
        for path, item in orjson.loads(openapi_document())["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served == documented
