"""Schemathesis hooks for test_fuzz: valid cases meet the rules only words can state.

Loaded by the schemathesis command line (SCHEMATHESIS_HOOKS). Everything a schema
can say is in the document (patterns, lengths, enums, `not`), and the generated
values reach the API as generated: hosts, times, keys and bodies are never swapped
for fixed ones (the test API resolves every host name offline instead, see
test_fuzz). Only cases the document calls valid are touched, and only in what its
descriptions say beyond the schema, each by the least change that keeps what was
generated:

- POST /v1/messages: the body must hold something to track in its mode. Valid
  cases are sent in track mode with one #track directive of a valid target added
  to their generated body (a #track already in it is defused, since its target is
  random text).
- POST /v1/conversions: occurred_at must be at most a day from now (a bound that
  moves with the clock, so no pattern states it): a valid case's later time is
  moved to the time of the call in its own offset. Metadata must be at most
  4 KiB as JSON: a larger one is sent as {}.
- expired_url (links, messages, a link's PATCH, the account's PATCH): at most 2,048
  characters once normalised (percent-encoding makes some URLs longer than sent,
  and the redirect workers receive the account's in a notification of bounded
  size): a longer one is sent as https://example.com/expired. POST /v1/messages
  states the URL's form in words (its schema has no room for one more pattern):
  a value of another form is sent as that URL too.
- POST /v1/keys: expires_at must be in the future and at most ten years ahead (a
  bound that moves with the clock): a valid case's time outside that is moved to a
  day from the time of the call, in its own offset.
- DELETE /v1/keys/{key_id} and POST /v1/keys/{key_id}/rotate: the key the fuzzer
  calls with (its id in FUZZ_OWN_KEY_ID) is never revoked or rotated away, or every
  later call would be a 401: a case naming it names key 0 instead (a 404).
- POST /v1/links and POST /v1/messages: `domain` must be a verified domain of the
  account, and the fuzzer's account has none: a valid case's domain is sent as null.
- POST /v1/domains: the name must be a host name IDNA accepts, of two labels or more,
  not SHORT_DOMAIN (words, shortlink.domains.normalise): a valid case's other name is
  sent as a fresh `fuzz<n>.example`. PATCH /v1/domains/{domain}: `not_found_url`
  follows expired_url's rule above; an app-link document must be at most 64 KiB as
  JSON and hold no NUL character (PostgreSQL's jsonb cannot store one; no schema
  reaches every string of a free-form document): another is sent as {}.
- rules[].url and variants[].url (links, messages, a link's PATCH, a campaign's PATCH):
  at most 2,048 characters once normalised, as expired_url: a longer one is sent as
  https://example.com/rule.
- Idempotency-Key: a key already used for a different request is refused (422, as
  the IETF draft says). Valid cases get a key of their own: the generated one with
  a unique tail, still 1 to 255 visible ASCII characters.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import schemathesis
from schemathesis import Case, GenerationMode, HookContext
from yarl import URL

from shortlink import domains, validation

DIRECTIVE = ' #track("https://shop.example/fuzz")'
MAX_BODY = 10_000
_KEY_HEADER = "Idempotency-Key"
_fresh = itertools.count()
_MAX_METADATA = 4096
_LATEST_AHEAD = timedelta(days=1)
_MAX_URL = 2048
_URL = re.compile(validation.URL_PATTERN)
_LONGEST_KEY = timedelta(days=3650)
_OWN_KEY = os.environ.get("FUZZ_OWN_KEY_ID", "")
_KEY_ROUTES = {("DELETE", "/v1/keys/{key_id}"), ("POST", "/v1/keys/{key_id}/rotate")}


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    route = (case.method.upper(), case.operation.path)
    if route in _KEY_ROUTES and str((case.path_parameters or {}).get("key_id")) == _OWN_KEY:
        case.path_parameters = {**(case.path_parameters or {}), "key_id": 0}
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return
    key = (case.headers or {}).get(_KEY_HEADER)
    if isinstance(key, str) and case.headers is not None:
        tail = f"~fuzz{next(_fresh)}"
        case.headers[_KEY_HEADER] = key[: 255 - len(tail)] + tail
    if not isinstance(case.body, dict):
        return
    route = (case.method.upper(), case.operation.path)
    for field in ("expired_url", "not_found_url"):
        expired = case.body.get(field)
        if isinstance(expired, str) and (
            _normalised_length(expired) > _MAX_URL or not _URL.fullmatch(expired)
        ):
            case.body[field] = "https://example.com/expired"
    for field in ("rules", "variants"):
        items = case.body.get(field)
        for item in items if isinstance(items, list) else ():
            url = item.get("url") if isinstance(item, dict) else None
            if isinstance(url, str) and _normalised_length(url) > _MAX_URL:
                item["url"] = "https://example.com/rule"
    if route == ("PATCH", "/v1/domains/{domain}"):
        for field in ("apple_app_site_association", "assetlinks"):
            document = case.body.get(field)
            if document is not None and not _storable(document):
                case.body[field] = {}
    if route in (("POST", "/v1/links"), ("POST", "/v1/messages")) and "domain" in case.body:
        case.body["domain"] = None
    if route == ("POST", "/v1/domains") and isinstance(case.body.get("domain"), str):
        try:
            domains.normalise(case.body["domain"], os.environ.get("SHORT_DOMAIN", "sl.test"))
        except ValueError:
            case.body["domain"] = f"fuzz{next(_fresh)}-{os.getpid()}.example"
    if route == ("POST", "/v1/messages") and isinstance(case.body.get("body"), str):
        text = case.body["body"]
        if not text.endswith(DIRECTIVE):  # a case sent again keeps its directive
            text = text.replace("#track", "#trak")
            case.body["body"] = text[: MAX_BODY - len(DIRECTIVE)] + DIRECTIVE
        case.body["mode"] = "track"
    elif route == ("POST", "/v1/conversions"):
        when = case.body.get("occurred_at")
        if isinstance(when, str):
            case.body["occurred_at"] = _not_ahead(when)
        metadata = case.body.get("metadata")
        if isinstance(metadata, dict) and len(orjson.dumps(metadata)) > _MAX_METADATA:
            case.body["metadata"] = {}
    elif route == ("POST", "/v1/keys"):
        when = case.body.get("expires_at")
        if isinstance(when, str):
            case.body["expires_at"] = _ahead(when)


def _storable(document: object) -> bool:
    """An app-link document the API keeps: small enough, and no NUL anywhere in it."""
    try:
        text = orjson.dumps(document)
    except TypeError:
        return True  # not JSON orjson writes: left for the API to judge
    return len(text) <= domains.MAX_DOCUMENT_BYTES and b"\\u0000" not in text


def _normalised_length(url: str) -> int:
    try:
        return len(str(URL(url)))
    except ValueError:
        return 0  # not a URL the API reads: left for the API to judge


def _not_ahead(when: str) -> str:
    """`when` if it is at most a day from now, else now in the same offset."""
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        return when  # not a time the API reads: left for the API to judge
    now = datetime.now(moment.tzinfo or UTC)
    return when if moment <= now + _LATEST_AHEAD else now.isoformat()


def _ahead(when: str) -> str:
    """`when` if it is from now to ten years ahead, else a day from now in the same offset."""
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        return when  # not a time the API reads: left for the API to judge
    now = datetime.now(moment.tzinfo or UTC)
    if now < moment <= now + _LONGEST_KEY - _LATEST_AHEAD:
        return when
    return (now + _LATEST_AHEAD).isoformat()
