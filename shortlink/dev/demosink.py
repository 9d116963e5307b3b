"""The demo customer endpoint `make run` starts: prints every forwarded click.

    python -m shortlink.dev.demosink [--port 8083]

Answers 200 to POST /hook and writes one line per click to stdout (a batch of
three clicks is three lines), so a new user sees each tap on a demo link travel
through Kafka and the forwarder. An event (CLICKTHRU, CONVERTED) is one line too.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any
from xml.sax.saxutils import unescape

import orjson
import uvloop
from aiohttp import web

_XML_CLICK = re.compile(rb"<ClickDetail>(.*?)</ClickDetail>", re.DOTALL)
_XML_FIELD = re.compile(rb"<(TrackingUrlId|PhoneNumber|DeviceName|UserAgent|ClickDate)>([^<]*)<")


def summaries(body: bytes, content_type: str) -> list[str]:
    """One line per click a forwarded body holds (JSON or XML ClickForward), or one line
    for anything else (an event, a body that is neither)."""
    clicks = _XML_CLICK.findall(body)
    if clicks:
        return [
            _click_line(
                i, len(clicks), {k.decode(): unescape(v.decode()) for k, v in _XML_FIELD.findall(c)}
            )
            for i, c in enumerate(clicks, 1)
        ]
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [f"{len(body)} bytes of {content_type}"]
    details = document.get("ClickDetails") if isinstance(document, dict) else None
    if isinstance(details, list) and details:
        return [_click_line(i, len(details), d) for i, d in enumerate(details, 1)]
    return [orjson.dumps(document).decode()[:200]]


def _click_line(index: int, total: int, click: dict[str, Any]) -> str:
    device = click.get("DeviceName") or click.get("UserAgent") or "unknown device"
    return (
        f"click {index}/{total}: TrackingUrlId {click.get('TrackingUrlId')}, "
        f"PhoneNumber {click.get('PhoneNumber')}, {device}, {click.get('ClickDate')}"
    )


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    rid = request.headers.get("X-Request-Identifier", "?")
    for line in summaries(body, request.content_type):
        sys.stdout.write(f"demo endpoint received {rid}: {line}\n")
    sys.stdout.flush()
    return web.Response()


def create_app() -> web.Application:
    """The demo endpoint: POST /hook."""
    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8083)
    args = parser.parse_args()
    web.run_app(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
