"""Registering the dashboard, the API docs and their static files on the API app."""

from __future__ import annotations

from aiohttp import web

from shortlink.api.config import ApiConfig
from shortlink.api.dashboard import apidocs, pages, sessions
from shortlink.api.dashboard.render import TEMPLATES, add_security_headers, environment, package_dir

# Middleware for the API app, before auth: CSV downloads may use the session cookie.
middleware = sessions.csv_session_middleware


def setup(app: web.Application, config: ApiConfig) -> None:
    """Add the docs, the static files and (when enabled) the dashboard pages."""
    app[TEMPLATES] = environment()
    app.on_response_prepare.append(add_security_headers)
    app.router.add_static("/static/", package_dir("static"), append_version=False)
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
