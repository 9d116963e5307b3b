"""The TLS terminator's question: may it get a certificate for this host?

Caddy's on-demand TLS (deploy/caddy) asks `GET /tls-ask?domain=<host>` before it
requests a certificate for a host it has not seen; 200 means yes, anything else
no. The answer is yes for SHORT_DOMAIN and for the verified branded domains the
worker keeps in memory (shortlink.redirect.domains): the same set it serves, read
without touching the database, so a flood of TLS handshakes for random names costs
no query.

The endpoint has a listener of its own (TLS_ASK_HOST:TLS_ASK_PORT, 127.0.0.1 and
off by default), never the public redirect port: a Caddy beside the redirect
server (the same host, or the same Kubernetes pod) reaches it on the loopback
address; nobody outside can.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from shortlink import domains
from shortlink.exceptions import InvalidInput
from shortlink.redirect.config import RedirectConfig
from shortlink.redirect.domains import BrandedHosts
from shortlink.redirect.listener import LISTENER

PATH = "/tls-ask"
MAX_QUERY = 1000  # characters of the domain parameter


def allowed(hosts: BrandedHosts, short_domain: str | None, raw: str) -> bool:
    """Whether a certificate may be issued for the host `raw`."""
    if len(raw) > MAX_QUERY:
        return False
    try:
        name = domains.normalise(raw)
    except InvalidInput:
        return False
    if short_domain is not None and name == domains.host_of(short_domain):
        return True
    return name in hosts.domains


def ask_app(hosts: BrandedHosts, short_domain: str | None) -> web.Application:
    async def ask(request: web.Request) -> web.Response:
        if allowed(hosts, short_domain, request.query.get("domain", "")):
            return web.Response(text="yes")
        return web.Response(status=404, text="no")

    app = web.Application()
    app.router.add_get(PATH, ask)
    return app


def ask_context(config: RedirectConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """cleanup_ctx (after the listener): serve the ask endpoint when TLS_ASK_PORT is set."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if not config.tls_ask_port:
            yield
            return
        runner = web.AppRunner(ask_app(app[LISTENER].hosts, config.short_domain))
        await runner.setup()
        # Every worker binds the port (SO_REUSEPORT), as the redirect port.
        site = web.TCPSite(runner, config.tls_ask_host, config.tls_ask_port, reuse_port=True)
        await site.start()
        try:
            yield
        finally:
            await runner.cleanup()

    return context
