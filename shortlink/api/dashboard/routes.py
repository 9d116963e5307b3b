"""Registering the dashboard, the API docs and their static files on the API app.

A static file is named by a path of ASCII letters, digits, dots, dashes and
underscores (no part starting with a dot) of at most 100 characters, and anything
else is a 404 before the file system is asked: it has errors of its own for names
a client can send (a name too long is not "no such file").
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from shortlink.api.config import ApiConfig
from shortlink.api.dashboard import admin, apidocs, pages, sessions
from shortlink.api.dashboard.render import TEMPLATES, add_security_headers, environment, package_dir

# Middleware for the API app, before auth: CSV downloads may use the session cookie.
middleware = sessions.csv_session_middleware


def setup(app: web.Application, config: ApiConfig) -> None:
    """Add the docs, the static files and (when enabled) the dashboard pages."""
    app[TEMPLATES] = environment()
    app.on_response_prepare.append(add_security_headers)
    app.router.add_get("/static/{name:.+}", static_file)
    app.router.add_get("/v1/docs", apidocs.docs)
    if not config.dashboard.enabled or config.dashboard.secret is None:
        return
    app[sessions.SIGNER] = sessions.Signer(config.dashboard.secret)
    app.on_response_prepare.append(sessions.forget_stale_cookie)
    add = app.router.add_route
    add("GET", "/dashboard", pages.index)
    add("GET", "/dashboard/", pages.index)
    add("GET", "/dashboard/signin", pages.signin_form)
    add("POST", "/dashboard/signin", pages.signin)
    add("POST", "/dashboard/signout", pages.signout)
    add("GET", "/dashboard/link/{token}", pages.link)
    add("GET", "/dashboard/campaigns", pages.campaigns)
    add("GET", "/dashboard/campaigns/{name}", pages.campaign)
    add("GET", "/dashboard/keys", admin.keys)
    add("POST", "/dashboard/keys", admin.create_key)
    add("POST", "/dashboard/keys/{key_id}/revoke", admin.revoke_key)
    add("GET", "/dashboard/audit", admin.audit_log)
    add("GET", "/dashboard/domains", admin.domains_page)


STATIC = package_dir("static")
MAX_STATIC_NAME = 100
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


async def static_file(request: web.Request) -> web.StreamResponse:
    """GET /static/{name}: one of the package's static files (404 for any other name)."""
    name = request.match_info["name"]
    if len(name) > MAX_STATIC_NAME or _STATIC_NAME.fullmatch(name) is None:
        raise web.HTTPNotFound()
    path = STATIC / name
    if not await asyncio.to_thread(path.is_file):
        raise web.HTTPNotFound()
    return web.FileResponse(path)
