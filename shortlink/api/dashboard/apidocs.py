"""GET /v1/docs: the OpenAPI document rendered by the vendored Swagger UI (no CDN)."""

from __future__ import annotations

from aiohttp import web

from shortlink.api.dashboard.render import page


async def docs(request: web.Request) -> web.Response:
    """The API reference, drawn in the browser from /v1/openapi.json."""
    return page(request, "docs.html", {})
