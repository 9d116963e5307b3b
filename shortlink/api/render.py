"""Answers of the bulk routes: rendered once per form, sized before anything is made.

Every recipient's message is its plan's fixed text (shortlink.api.rewrite) with a
short URL in each slot, and every short URL is one prefix (`https://tx1.in/`)
and a token of the request's token length whose characters are ASCII letters
and digits: in the GSM 03.38 basic alphabet, one septet or one UTF-16 unit
each, never half of a pair. So all the messages of one plan have the same
length, encoding and segments whatever their tokens: `Form` measures a plan
once, with stand-in tokens, and holds the message's JSON with holes for the
recipient, the tokens and the link ids. Rendering a recipient is one bytes
%-format, with no per-recipient text, measure or dict.

The same holes make the answer's size known before any link is created: the
form's fixed bytes, the recipient's JSON and, per link, three tokens and an id
of at most MAX_ID_DIGITS digits. `check_size` refuses a request whose answer
would pass MAX_RESPONSE_BYTES (422 `response_too_large`, the route's other
"too much for one request" answer beside `too_many_links`; 413 is what aiohttp
answers for a request body over MAX_REQUEST_BYTES, and this body was not).

Long loops give the event loop back every SLICE recipients, so other requests
to the worker are answered while a 200,000-recipient one is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import payload, web
from aiohttp.abc import AbstractStreamWriter

from shortlink.api import sms
from shortlink.api.config import ApiConfig
from shortlink.api.errors import ApiError
from shortlink.api.rewrite import Plan
from shortlink.links import CreatedLink

# Recipients handled between two turns of the event loop: a few milliseconds of work. A
# request that waits on PostgreSQL needs a turn per round trip (a dozen for GET
# /v1/links/{token}), so a slice is paid that many times over.
SLICE = 500
WRITE_CHUNK = 1 << 20  # bytes of a large answer handed to the transport at a time
MAX_ID_DIGITS = 19  # a bigint: sizes are counted before the ids exist
_STAND_IN = "0"  # a token character: GSM basic alphabet, one unit in either encoding


async def slices(count: int) -> AsyncIterator[slice]:
    """Slices of SLICE items covering `count` items, with a turn of the event loop
    between two of them."""
    for start in range(0, count, SLICE):
        if start:
            await asyncio.sleep(0)
        yield slice(start, start + SLICE)


def json_text(value: str | None) -> bytes:
    """`value` as a JSON string (or null)."""
    return orjson.dumps(value)


def _inner(text: str) -> bytes:
    """`text` as the inside of a JSON string, with % doubled for a %-format template."""
    return orjson.dumps(text)[1:-1].replace(b"%", b"%%")


@dataclass(frozen=True, slots=True)
class Form:
    """A plan's message as JSON with holes (to, client_ref, each token, then id, token and
    token per link), and its SMS measure."""

    template: bytes
    links: int
    measure: sms.Sms
    fixed: int  # bytes of the template outside its holes

    @classmethod
    def of(cls, plan: Plan, prefix: str, token_length: int) -> Form:
        """The form of `plan` with short URLs `prefix` + a token of `token_length`."""
        count = len(plan.targets)
        stand_in = prefix + _STAND_IN * token_length
        measured = sms.measure(plan.render([stand_in] * count))
        body = b"%s".join([_inner(text + prefix) for text in plan.texts[:-1]])
        body += b"%s" + _inner(plan.texts[-1])
        links = b",".join(
            b'{"tracking_url_id":%d,"token":"%s","short_url":"'
            + _inner(prefix)
            + b'%s","target_url":'
            + json_text(target).replace(b"%", b"%%")
            + b"}"
            for target in plan.targets
        )
        template = (
            b'{"to":%s,"client_ref":%s,"body":"'
            + body
            + b'","links":['
            + links
            + b'],"length":'
            + str(measured.length).encode()
            + b',"encoding":'
            + json_text(measured.encoding)
            + b',"segments":'
            + str(measured.segments).encode()
            + b"}"
        )
        # Outside the holes: filled with nothing, and ids of one digit taken off.
        fixed = len(template % (b"", b"", *(b"",) * count, *(0, b"", b"") * count)) - count
        return cls(template, count, measured, fixed)

    def size(self, to: bytes, client_ref: bytes, token_length: int) -> int:
        """Most bytes of one message of this form (ids counted at MAX_ID_DIGITS)."""
        return (
            self.fixed + len(to) + len(client_ref) + self.links * (3 * token_length + MAX_ID_DIGITS)
        )

    def message(self, to: bytes, client_ref: bytes, links: Sequence[CreatedLink]) -> bytes:
        """The JSON of one recipient's message with `links` (in slot order) put in."""
        tokens = [link.token.encode() for link in links]
        values: list[bytes | int] = [to, client_ref, *tokens]
        for link, token in zip(links, tokens, strict=True):
            values += (link.id, token, token)
        return self.template % tuple(values)


class Forms:
    """The forms of one request's plans, each made once (one for a body shared by all)."""

    def __init__(self, prefix: str, token_length: int) -> None:
        self.prefix = prefix
        self.token_length = token_length
        # By identity: recipients share plan objects, and hashing a plan hashes its texts.
        # The plan is kept beside its form, so its id cannot be reused meanwhile.
        self._forms: dict[int, tuple[Plan, Form]] = {}

    def __getitem__(self, plan: Plan) -> Form:
        known = self._forms.get(id(plan))
        if known is None:
            known = self._forms[id(plan)] = (plan, Form.of(plan, self.prefix, self.token_length))
        return known[1]


class _Refs(dict[str | None, bytes]):
    """client_ref values as JSON, each encoded once (most requests share one, or none)."""

    def __missing__(self, ref: str | None) -> bytes:
        encoded = self[ref] = json_text(ref)
        return encoded


async def messages_size(
    forms: Forms, plans: Sequence[Plan], phones: Sequence[str], refs: Sequence[str | None]
) -> int:
    """Most bytes of the answer of POST /v1/messages, before any link exists."""
    total = len(b'{"messages":[]}') + max(len(plans) - 1, 0)
    refs_json = _Refs()
    async for part in slices(len(plans)):
        for plan, phone, ref in zip(plans[part], phones[part], refs[part], strict=True):
            total += forms[plan].size(json_text(phone), refs_json[ref], forms.token_length)
    return total


async def messages_answer(
    forms: Forms,
    plans: Sequence[Plan],
    phones: Sequence[str],
    refs: Sequence[str | None],
    created: Sequence[CreatedLink],
) -> bytes:
    """`{"messages": [...]}`: each recipient's message, with `created` in plan order."""
    refs_json = _Refs()
    chunks = [b'{"messages":[']
    at = 0
    async for part in slices(len(plans)):
        if part.start:
            chunks.append(b",")
        parts = []
        for plan, phone, ref in zip(plans[part], phones[part], refs[part], strict=True):
            form = forms[plan]
            parts.append(
                form.message(json_text(phone), refs_json[ref], created[at : at + form.links])
            )
            at += form.links
        chunks.append(b",".join(parts))
    chunks.append(b"]}")
    return await _joined(chunks)


def _link_template(prefix: str) -> bytes:
    """A link of POST /v1/links's answer, holes for id, token, token, phone_number, client_ref."""
    return (
        b'{"tracking_url_id":%d,"token":"%s","short_url":"'
        + _inner(prefix)
        + b'%s","phone_number":%s,"client_ref":%s}'
    )


async def links_size(
    prefix: str, token_length: int, phones: Sequence[str | None], refs: Sequence[str | None]
) -> int:
    """Most bytes of the answer of POST /v1/links, before any link exists."""
    template = _link_template(prefix)
    each = len(template % (0, b"", b"", b"", b"")) - 1 + 2 * token_length + MAX_ID_DIGITS
    total = len(b'{"links":[]}') + max(len(phones) - 1, 0) + each * len(phones)
    refs_json = _Refs()
    async for part in slices(len(phones)):
        for phone, ref in zip(phones[part], refs[part], strict=True):
            total += len(json_text(phone)) + len(refs_json[ref])
    return total


async def links_answer(
    prefix: str,
    phones: Sequence[str | None],
    refs: Sequence[str | None],
    created: Sequence[CreatedLink],
) -> bytes:
    """`{"links": [...]}`: one link per recipient, in request order."""
    template = _link_template(prefix)
    refs_json = _Refs()
    chunks = [b'{"links":[']
    async for part in slices(len(phones)):
        if part.start:
            chunks.append(b",")
        parts = []
        for link, phone, ref in zip(created[part], phones[part], refs[part], strict=True):
            token = link.token.encode()
            parts.append(template % (link.id, token, token, json_text(phone), refs_json[ref]))
        chunks.append(b",".join(parts))
    chunks.append(b"]}")
    return await _joined(chunks)


async def _joined(chunks: list[bytes]) -> bytes:
    """The chunks as one bytes object. Copying a 140 MB answer takes a tenth of a second;
    bytes.join lets go of the GIL for large results, so in a thread the loop runs meanwhile."""
    if sum(map(len, chunks)) <= WRITE_CHUNK:  # small enough to copy here
        return b"".join(chunks)
    return await asyncio.to_thread(b"".join, chunks)


def check_link_count(count: int, config: ApiConfig, field: str) -> None:
    """422 when one request would create more links than MAX_LINKS_PER_REQUEST."""
    if count > config.max_links_per_request:
        message = (
            f"this request would create {count:,} links; at most "
            f"{config.max_links_per_request:,} per request (MAX_LINKS_PER_REQUEST)"
        )
        raise ApiError(
            422, "too_many_links", f"{field}: {message}", [{"field": field, "message": message}]
        )


def check_size(size: int, config: ApiConfig, field: str) -> None:
    """422 when a request's answer would be larger than MAX_RESPONSE_BYTES."""
    if size > config.max_response_bytes:
        message = (
            f"the answer to this request would take up to {size:,} bytes; at most "
            f"{config.max_response_bytes:,} per request (MAX_RESPONSE_BYTES): "
            "send fewer recipients or a shorter body per request"
        )
        raise ApiError(
            422, "response_too_large", f"{field}: {message}", [{"field": field, "message": message}]
        )


class _Chunked(payload.Payload):
    """A bytes body written a chunk at a time, waiting for the socket in between. aiohttp
    writes a bytes body with its headers in one piece, which on Python < 3.12.9 first
    copies them together: a tenth of a second of the loop for a 140 MB answer."""

    _value: bytes
    _autoclose = True  # nothing to close

    def __init__(self, value: bytes) -> None:
        super().__init__(value, content_type="application/json")
        self._size = len(value)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = memoryview(self._value)[:content_length]
        for start in range(0, len(view), WRITE_CHUNK):
            await writer.write(view[start : start + WRITE_CHUNK])


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer; a large one is sent in chunks."""
    if len(body) <= WRITE_CHUNK:
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )
    return web.Response(status=status, body=_Chunked(body), headers=headers)
