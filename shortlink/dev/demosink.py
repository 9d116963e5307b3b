"""The demo customer endpoint `make run` starts: prints every forwarded POST.

    python -m shortlink.dev.demosink [--port 8083]

Answers 200 to POST /hook and writes one line per request to stdout, so a new
user sees a tap on a demo link travel through Kafka and the forwarder.
"""

from __future__ import annotations

import argparse
import sys

import orjson
import uvloop
from aiohttp import web


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    rid = request.headers.get("X-Request-Identifier", "?")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        summary = f"{len(body)} bytes of {request.content_type}"
    else:
        if "ClickDetails" in document:
            first = document["ClickDetails"][0]
            summary = (
                f"{len(document['ClickDetails'])} click(s); first: TrackingUrlId "
                f"{first['TrackingUrlId']}, PhoneNumber {first['PhoneNumber']}, "
                f"{first['DeviceName'] or first['UserAgent']}, {first['ClickDate']}"
            )
        else:
            summary = orjson.dumps(document).decode()[:200]
    sys.stdout.write(f"demo endpoint received {rid}: {summary}\n")
    sys.stdout.flush()
    return web.Response()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8083)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
