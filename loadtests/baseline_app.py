"""The benchmark baseline: a minimal aiohttp application that redirects from a dict.

    python -m loadtests.baseline_app TOKENS_FILE PORT

Same response as the real server (302, Location, Cache-Control), same event
loop (uvloop), no access log; nothing else: no cache bookkeeping, no clicks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop
from aiohttp import web


def build(links: dict[str, str]) -> web.Application:
    async def redirect(request: web.Request) -> web.Response:
        url = links.get(request.match_info["token"])
        if url is None:
            return web.Response(status=404)
        return web.Response(
            status=302, headers={"Location": url, "Cache-Control": "private, max-age=0"}
        )

    app = web.Application()
    app.router.add_get("/{token}", redirect)
    return app


def main() -> None:
    tokens_file, port = Path(sys.argv[1]), int(sys.argv[2])
    links = {}
    for line in tokens_file.read_text().splitlines():
        token, url = line.split("\t")
        links[token] = url
    web.run_app(
        build(links),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
