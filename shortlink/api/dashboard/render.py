"""Pages from Jinja2 templates (autoescaped), and the security headers they are sent with.

Every string a customer or a phone sent (campaign names, client_ref, user
agents) reaches a page only through a template, which escapes it; data for the
charts travels as JSON in a non-executable `<script type="application/json">`
(Jinja's `tojson` escapes `<`, `>`, `&` and `'` there). Scripts and styles are
static files of this package, so the Content-Security-Policy allows no inline
script or style at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from shortlink.timestamps import rfc3339

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
PAGE_PREFIXES = ("/dashboard", "/static/", "/v1/docs")


def package_dir(name: str) -> Path:
    """A folder of this package (templates, static) on disk."""
    return Path(str(resources.files("shortlink") / "api" / "dashboard" / name))


def _number(value: int | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return rfc3339(value) or ""


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(package_dir("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=_number, percent=_percent, when=_when, iso=_iso)
    return env


TEMPLATES = web.AppKey("dashboard_templates", jinja2.Environment)


def page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """The template rendered as an HTML page (never cached: it shows an account's data)."""
    html = request.app[TEMPLATES].get_template(template).render(request=request, **context)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the dashboard's, the docs' and static files' security headers."""
    if request.path.startswith(PAGE_PREFIXES):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
