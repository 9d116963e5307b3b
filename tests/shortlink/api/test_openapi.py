"""The OpenAPI contract: valid, served, and naming every route the API has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from openapi_spec_validator import validate

from shortlink import audit, conversions, rules, validation
from shortlink.api import forwarding, idempotency
from shortlink.api.app import create_app, openapi_document
from shortlink.api.config import ApiConfig
from shortlink.campaigns import clicks, summaries
from tests.shortlink.api.conftest import SHORT_DOMAIN, Client

DOCUMENT = Path(__file__).parents[3] / "shortlink" / "api" / "openapi.json"


def test_document_is_valid_openapi() -> None:
    """The document in the repository passes openapi-spec-validator."""
    validate(json.loads(DOCUMENT.read_text()))


async def test_document_is_served_without_a_key(client: Client) -> None:
    """GET /v1/openapi.json needs no key: the repository's document plus the short-host rule."""
    answer = await client.get("/v1/openapi.json", key=None)
    assert answer.status == 200
    served = answer.json
    expected = orjson.loads(openapi_document())
    not_short = {"type": "string", "pattern": validation.short_domain_pattern(SHORT_DOMAIN)}
    for name in ("CreateLinks", "PatchLink"):
        assert served["components"]["schemas"][name]["properties"]["url"].pop("not") == not_short
    assert served == expected


@pytest.mark.parametrize(
    "target",
    ["https://sl.test/AbC1234", "HTTP://SL.TEST:443/x", "https://sl.test.:80/", "http://sl.test"],
)
async def test_a_target_on_the_short_host_is_refused_as_the_served_document_says(
    client: Client, target: str
) -> None:
    """A target on SHORT_DOMAIN's host and port (80 or 443: it names none) is a 422, as the
    served `not` pattern says."""
    schema = (await client.get("/v1/openapi.json", key=None)).json["components"]["schemas"]
    assert re.search(schema["CreateLinks"]["properties"]["url"]["not"]["pattern"], target)
    answer = await client.post("/v1/links", {"url": target})
    assert answer.status == 422
    assert answer.json["error"]["details"] == [
        {"field": "url", "message": "must not point at the short domain itself"}
    ]


async def test_another_port_of_the_short_host_is_a_target(client: Client) -> None:
    """A target on SHORT_DOMAIN's host but another port is no short URL: the served `not`
    pattern lets it through and the API makes the link."""
    schema = (await client.get("/v1/openapi.json", key=None)).json["components"]["schemas"]
    target = "http://sl.test:8083/hook"
    assert re.search(schema["CreateLinks"]["properties"]["url"]["not"]["pattern"], target) is None
    answer = await client.post("/v1/links", {"url": target})
    assert answer.status == 201, answer.json
    assert answer.json["links"][0]["token"]


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


def _patterns(node: Any, where: str = "") -> dict[str, str]:
    """Every `pattern` in the document, by where it is."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                found[where] = value
            else:
                found |= _patterns(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found |= _patterns(value, f"{where}/{index}")
    return found


def test_the_document_states_the_patterns_the_code_checks() -> None:
    """Each field's pattern in the document is, character for character, one the code uses."""
    code = {
        validation.TEXT_PATTERN,
        validation.URL_PATTERN,
        validation.ENDPOINT_URL_PATTERN,
        conversions.OCCURRED_AT_PATTERN,
        validation.PHONE_PATTERN,
        idempotency.KEY_PATTERN,
        forwarding.WHSEC_PATTERN,
        clicks.CURSOR.pattern,
        summaries.CURSOR.pattern,
        audit.CURSOR.pattern,
        "^[0-9A-Za-z]{6,8}$",  # tokens (shortlink.tokens.is_token); others answer 404
        rules.COUNTRY_PATTERN,
        rules.LANGUAGE_PATTERN,
        rules.INSTANT_PATTERN,
    }
    patterns = _patterns(orjson.loads(openapi_document()))
    assert {where: p for where, p in patterns.items() if p not in code} == {}
    assert set(patterns.values()) == code
    schemas = orjson.loads(openapi_document())["components"]["schemas"]
    assert schemas["CreateLinks"]["properties"]["url"]["pattern"] == validation.URL_PATTERN
    for name, field in (
        ("EndpointSettings", "url"),
        ("CreateLinks", "callback_url"),
        ("CreateMessages", "callback_url"),
    ):
        assert schemas[name]["properties"][field]["pattern"] == validation.ENDPOINT_URL_PATTERN
    occurred_at = schemas["CreateConversion"]["properties"]["occurred_at"]
    assert occurred_at["pattern"] == conversions.OCCURRED_AT_PATTERN
    recipient = schemas["CreateLinks"]["properties"]["recipients"]["items"]["properties"]
    assert recipient["phone_number"]["pattern"] == validation.PHONE_PATTERN
    assert schemas["EndpointSettings"]["properties"]["secret"]["pattern"] == (
        forwarding.WHSEC_PATTERN
    )
