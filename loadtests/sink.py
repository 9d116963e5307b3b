"""A customer endpoint for load tests and benchmarks: answers 200, checks, measures.

    python -m loadtests.sink --port 8090 [--host 127.0.0.1]

POST /hook takes ClickForward JSON or XML (or a CLICKTHRU event), checks the body
against the contract (forwarder.formats is not used for that: the checks are
written from the seed's examples), answers 200 at once, and records for every
ClickDetail the delay from its ClickDate to the POST's arrival.

GET /stats answers {"posts", "clicks", "invalid", "distinct_clicks" (a retried
batch counted once),
"latency_ms": {"p50", "p90", "p99", "max"}, "first_at", "last_at", "mode",
"refused"}; POST /reset forgets everything. `errors` lists the first few
contract violations seen. GET /arrivals lists, for every distinct click, its
ClickDate (ms) and when it arrived (Unix seconds).

For fault benchmarks the endpoint can misbehave, switched at run time with
POST /mode {"mode": ..., "seconds": ...}: "ok" (the default), "fail" (answer 500,
count nothing), "slow" (hold the request `seconds`, default 11, then take it: a
customer that processed the POST after the caller gave up), "reset" (read the
request, then reset the connection, count nothing). `refused` counts the POSTs
not taken, by mode.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import struct
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import uvloop
from aiohttp import web

JSON_FIELDS = (
    "TrackedUrl",
    "ClientIdentifier",
    "ClientRef",
    "TrackingUrlId",
    "UserId",
    "PhoneNumber",
    "UserAgent",
    "Referrer",
    "DeviceName",
    "DeviceManufacturer",
    "IsWarningPageServed",
    "ShortenDate",
    "ClickDate",
)
REQUIRED = (
    "TrackingUrlId",
    "UserId",
    "TrackedUrl",
    "IsWarningPageServed",
    "ShortenDate",
    "ClickDate",
)
JSON_DATE = re.compile(r"^/Date\((\d+)\)/$")
XML_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MODES = ("ok", "fail", "slow", "reset")
_LINGER_NOW = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


class Sink:
    def __init__(self) -> None:
        self.mode = "ok"
        self.slow_seconds = 11.0
        self.reset()

    def reset(self) -> None:
        self.posts = 0
        self.clicks = 0
        self.invalid = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        # (RequestIdentifier, position): a retried batch is the same clicks again.
        self.seen: set[tuple[str, int]] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.refused: Counter[str] = Counter()
        self.arrivals: list[tuple[int, float]] = []  # (ClickDate ms, arrival), distinct clicks

    def fail(self, message: str) -> None:
        self.invalid += 1
        if len(self.errors) < 20:
            self.errors.append(message)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        mode = self.mode
        if mode == "fail":
            self.refused[mode] += 1
            return web.Response(status=500, text="failing on purpose")
        if mode == "reset":
            self.refused[mode] += 1
            _reset(request)
            return web.Response()  # never sent: the connection is gone
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        arrived = time.time()
        self.posts += 1
        self.first_at = self.first_at or arrived
        self.last_at = arrived
        try:
            if request.content_type == "application/xml":
                click_dates = self._check_xml(body)
            else:
                click_dates = self._check_json(body)
        except (ValueError, KeyError, TypeError, ET.ParseError) as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
            return web.Response()
        request_id = request.headers.get("X-Request-Identifier", "")
        for position, (_, clicked_ms) in enumerate(click_dates):
            self.clicks += 1
            if (request_id, position) in self.seen:
                continue
            self.seen.add((request_id, position))
            self.latencies.append(arrived * 1000 - clicked_ms)
            self.arrivals.append((clicked_ms, arrived))
        return web.Response()

    def _check_json(self, body: bytes) -> list[tuple[int, int]]:
        document: Any = orjson.loads(body)
        if "event" in document:  # a CLICKTHRU notification
            fields = document["event"]["fld-val-list"]
            if fields["new_state"] != "CLICKTHRU" or fields["previous_state"] != "DELIVERED":
                raise ValueError("not a CLICKTHRU state change")
            return [(int(fields["tracking_url_id"]), 0)]
        if not UUID.match(document["RequestIdentifier"]):
            raise ValueError("RequestIdentifier is not a UUID")
        details = document["ClickDetails"]
        if not 1 <= len(details) <= 100:
            raise ValueError(f"{len(details)} ClickDetails")
        out = []
        for detail in details:
            if tuple(detail) != JSON_FIELDS:
                raise ValueError(f"fields {tuple(detail)}")
            for key in REQUIRED:
                if detail[key] is None:
                    raise ValueError(f"{key} is null")
            if not isinstance(detail["TrackingUrlId"], int) or not isinstance(
                detail["UserId"], int
            ):
                raise TypeError("TrackingUrlId and UserId must be numbers")
            dates = [JSON_DATE.match(detail[key]) for key in ("ShortenDate", "ClickDate")]
            if not all(dates):
                raise ValueError("dates must be /Date(ms)/")
            out.append((detail["TrackingUrlId"], int(dates[1][1])))  # type: ignore[index]
        return out

    def _check_xml(self, body: bytes) -> list[tuple[int, int]]:
        root = ET.fromstring(body)  # noqa: S314 - our own forwarder's output, in a test tool
        if root.tag != "ClickForward":
            raise ValueError(f"root element {root.tag}")
        if not UUID.match(root.findtext("RequestIdentifier") or ""):
            raise ValueError("RequestIdentifier is not a UUID")
        details = root.findall("ClickDetails/ClickDetail")
        if not 1 <= len(details) <= 100:
            raise ValueError(f"{len(details)} ClickDetails")
        out = []
        for element in details:
            values = {child.tag: child.text or "" for child in element}
            for key in REQUIRED:
                if key not in values:
                    raise ValueError(f"{key} missing")
            for key in ("ShortenDate", "ClickDate"):
                if not XML_DATE.match(values[key]):
                    raise ValueError(f"{key} {values[key]!r}")
            second = datetime.strptime(values["ClickDate"][:19], "%Y-%m-%dT%H:%M:%S")
            millis = int(values["ClickDate"][20:23])
            clicked_ms = int(second.replace(tzinfo=UTC).timestamp()) * 1000 + millis
            out.append((int(values["TrackingUrlId"]), clicked_ms))
        return out

    async def stats(self, request: web.Request) -> web.Response:
        latencies = sorted(self.latencies)

        def at(q: float) -> float | None:
            return (
                round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)
                if latencies
                else None
            )

        return web.json_response(
            {
                "posts": self.posts,
                "clicks": self.clicks,
                "distinct_clicks": len(self.seen),
                "invalid": self.invalid,
                "errors": self.errors,
                "latency_ms": {
                    "p50": at(0.50),
                    "p90": at(0.90),
                    "p99": at(0.99),
                    "max": round(latencies[-1], 1) if latencies else None,
                    "mean": round(statistics.fmean(latencies), 1) if latencies else None,
                },
                "first_at": self.first_at,
                "last_at": self.last_at,
                "mode": self.mode,
                "refused": dict(self.refused),
            }
        )

    async def list_arrivals(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.arrivals), content_type="application/json")

    async def set_mode(self, request: web.Request) -> web.Response:
        try:
            wanted: Any = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            wanted = None
        mode = wanted.get("mode") if isinstance(wanted, dict) else None
        seconds = wanted.get("seconds", self.slow_seconds) if isinstance(wanted, dict) else None
        if mode not in MODES or not isinstance(seconds, int | float) or seconds < 0:
            message = f"mode must be one of {MODES}, seconds a number >= 0"
            return web.json_response(
                {"error": {"code": "bad_mode", "message": message}}, status=422
            )
        self.mode = mode
        self.slow_seconds = float(seconds)
        return web.json_response({"mode": self.mode, "seconds": self.slow_seconds})

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


def build() -> web.Application:
    sink = Sink()
    app = web.Application(client_max_size=16 << 20)
    app.router.add_post("/hook", sink.hook)
    app.router.add_get("/stats", sink.stats)
    app.router.add_post("/reset", sink.clear)
    app.router.add_get("/arrivals", sink.list_arrivals)
    app.router.add_post("/mode", sink.set_mode)
    return app


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset, as a crashing customer's server would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOW)
    transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    web.run_app(
        build(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
