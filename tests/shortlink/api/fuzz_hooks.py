"""Schemathesis hooks for test_fuzz: make valid cases meet the rules a schema cannot state.

Loaded by the schemathesis command line (SCHEMATHESIS_HOOKS). Only positive
cases (those the document says are valid) are touched, and only in what the
document's descriptions say beyond the schema:

- POST /v1/messages: the body must hold something to track. Valid cases are sent
  in track mode with one #track directive of a valid target added to their body.
- PUT /v1/endpoint, and callback_url of POST /v1/links and /v1/messages: the
  URL's host must resolve. Valid cases get the host 127.0.0.1 (the test API
  allows private endpoints); scheme, port, path stay.
- POST /v1/conversions: occurred_at must lie between 1970 and a day from now,
  and metadata must be at most 4 KiB as JSON. Valid cases get the time of the
  call (in the offset they had) and metadata {} when theirs is larger.
- Idempotency-Key: a key already used for a different request is refused (422,
  as the IETF draft says). Valid cases get a key of their own: the generated one
  with a unique tail, still 1 to 255 visible ASCII characters.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import schemathesis
from schemathesis import Case, GenerationMode, HookContext

DIRECTIVE = ' #track("https://shop.example/fuzz")'
MAX_BODY = 10_000
_HOST = re.compile(r"(?i)^(https?://)[^/?#:\[\]]+(.*)$", re.DOTALL)
_KEY_HEADER = "Idempotency-Key"
_fresh = itertools.count()
_MAX_METADATA = 4096


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return
    key = (case.headers or {}).get(_KEY_HEADER)
    if isinstance(key, str) and case.headers is not None:
        tail = f"~fuzz{next(_fresh)}"
        case.headers[_KEY_HEADER] = key[: 255 - len(tail)] + tail
    if not isinstance(case.body, dict):
        return
    route = (case.method.upper(), case.operation.path)
    if route == ("POST", "/v1/messages") and isinstance(case.body.get("body"), str):
        text = case.body["body"]
        if not text.endswith(DIRECTIVE):  # a case sent again keeps its directive
            text = text.replace("#track", "#trak")
            case.body["body"] = text[: MAX_BODY - len(DIRECTIVE)] + DIRECTIVE
        case.body["mode"] = "track"
    elif route == ("PUT", "/v1/endpoint") and isinstance(case.body.get("url"), str):
        case.body["url"] = _HOST.sub(r"\g<1>127.0.0.1\g<2>", case.body["url"])
    elif route == ("POST", "/v1/conversions"):
        when = case.body.get("occurred_at")
        if isinstance(when, str):
            try:
                offset = datetime.fromisoformat(when).utcoffset() or timedelta(0)
            except ValueError:
                offset = timedelta(0)
            case.body["occurred_at"] = datetime.now(timezone(offset)).isoformat()
        metadata = case.body.get("metadata")
        if isinstance(metadata, dict) and len(orjson.dumps(metadata)) > _MAX_METADATA:
            case.body["metadata"] = {}
    if route in (("POST", "/v1/links"), ("POST", "/v1/messages")) and isinstance(
        case.body.get("callback_url"), str
    ):
        case.body["callback_url"] = _HOST.sub(r"\g<1>127.0.0.1\g<2>", case.body["callback_url"])
