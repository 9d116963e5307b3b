"""The API application's keys that its handlers read: its settings and its resolver.

Set once by the app factory (shortlink.api.app.create_app); tests put their own
resolver. Resources with a lifecycle keep their key beside their cleanup context
(shortlink.pool.POOL, shortlink.supervise.SUPERVISOR, the dashboard's in
shortlink.api.dashboard).
"""

from __future__ import annotations

from aiohttp import web

from shortlink import endpoints
from shortlink.api.config import ApiConfig

API_CONFIG = web.AppKey("api_config", ApiConfig)
# How endpoint and callback hosts are looked up (the system's resolver; tests put their own).
RESOLVER = web.AppKey("endpoint_resolver", endpoints.Resolver)
