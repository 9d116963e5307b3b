"""The redirect's answer as one bytes object: the same bytes as aiohttp's, built cheaply.

For every redirect web.StreamResponse builds a header multidict, sets
Content-Length, looks up Date, Server and Connection, serialises the lot and
writes it: about a fifth of a redirect worker's CPU at full load (py-spy),
more than the whole click pipeline. Yet two redirects' heads differ only in
their Location (one per link group) and their Date (one per second). So
`Heads` keeps the rest as bytes, each LinkGroup keeps its Location encoded
once (`LinkGroup.location`), and a redirect is one join and one write.

The bytes are exactly what aiohttp writes for StreamResponse(status,
headers={Location, Cache-Control}) with content_length = 0: status line,
Location, Cache-Control, Content-Length, Date, Server, in that order (a test
compares the two on the wire). That holds for HTTP/1.1 keep-alive requests,
where aiohttp adds no Connection header; anything else (HTTP/1.0, a
`Connection: close` request, a Location aiohttp would refuse) is answered by
web.StreamResponse as before.
"""

from __future__ import annotations

import re
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import ClientConnectionResetError, web
from aiohttp.http import SERVER_SOFTWARE

# Every tap must reach us (and be counted): no shared caches, no reuse by the browser.
CACHE_CONTROL = "private, max-age=0"
# What aiohttp refuses in a header value (aiohttp.http_writer): control characters but tab.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class Heads:
    """The heads of one worker's redirects: status line and Date/Server kept as bytes."""

    def __init__(self, status: int) -> None:
        self._start = f"HTTP/1.1 {status} {_REASONS[status]}\r\nLocation: ".encode()
        self._middle = f"\r\nCache-Control: {CACHE_CONTROL}\r\nContent-Length: 0\r\n".encode()
        self._second = -1
        self._tail = b""

    def head(self, location: bytes, now: float) -> bytes:
        """The whole head of a redirect to `location` (encoded) at Unix time `now`."""
        second = int(now)
        if second != self._second:
            # The same format as aiohttp's Date: IMF-fixdate, e.g. "Tue, 01 Dec 2026 15:38:50 GMT".
            date = formatdate(second, usegmt=True)
            self._tail = f"Date: {date}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode()
            self._second = second
        return b"".join((self._start, location, self._middle, self._tail))


class Redirect(web.StreamResponse):
    """A response whose head is already bytes: prepare() writes them and the answer is done.

    aiohttp's low-level server, the only one that answers with it, calls
    prepare(), write_eof() and reads keep_alive; nothing builds or reads a header
    multidict, so StreamResponse.__init__ (which makes one) is not called, and
    `headers`, item access and the like are not there: the redirect server runs
    with aiohttp's access log off (shortlink.serve), which would read them.
    """

    def __init__(self, status: int, head: bytes) -> None:
        self._status = status
        self._reason = _REASONS[status]
        self._keep_alive = True
        self._head = head
        self._body_length = len(head)  # what StreamResponse reports: the bytes written

    async def prepare(self, request: web.BaseRequest) -> None:
        """Write the head (the whole answer); raise as aiohttp does if the client left."""
        if self._eof_sent:
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        transport.write(self._head)
        self._eof_sent = True

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing: prepare() wrote the whole answer (there is no body)."""


def encodable(location: str) -> bytes | None:
    """`location` as header bytes; None for what aiohttp refuses or rewrites in a header
    (control characters but tab, lone surrogates): such a link keeps aiohttp's own path."""
    if _FORBIDDEN.search(location):
        return None
    try:
        return location.encode("utf-8")
    except UnicodeEncodeError:
        return None
