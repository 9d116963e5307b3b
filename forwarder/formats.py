"""What customers receive: ClickForward JSON and XML, and the first-click event.

The contract is the providers' click forwarding specification (seed 004, summarised
in docs/design.md#contracts); where a detail is open, its examples decided:

- JSON: `{"RequestIdentifier": uuid, "ClickDetails": [...]}`, each ClickDetail with
  the keys in the example's order; dates are `"\\/Date(<ms since epoch>)\\/"`
  (escaped slashes, as .NET writes them); nulls are `null`.
- XML: `<ClickForward>` with the `xsi` and `xsd` namespace declarations, one
  element per line as in the example, dates ISO 8601 UTC with seven fractional
  digits; null fields are left out. ClientRef, absent from the example, comes
  last.
- clickthru: the message state change event of seed 000: previous state
  DELIVERED, new state CLICKTHRU, message id (client_ref), phone number, tracked
  URL, click time and an attempt counter. The stored body is the event; the
  envelope with the attempt number is added at each send.
- conversion: the same kind of event with new state CONVERTED, made by the API
  when the enterprise posts a conversion (its fields: shortlink.conversions);
  sent in the same envelope, whatever the endpoint's click format.

A click's fields travel between recording and batching as a "detail": a dict
with the contract's names and raw values (dates as ms since the epoch).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import orjson

from forwarder.enrich import Client
from shortlink.clickevent import ClickEvent

Detail = dict[str, Any]

CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    "clickthru": "application/json; charset=utf-8",
    "conversion": "application/json; charset=utf-8",
}
JSON_ORDER = (
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
XML_ORDER = (
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
    "TrackedUrl",
    "ClientIdentifier",
    "ClientRef",
)
_DATES = frozenset({"ShortenDate", "ClickDate"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Characters XML 1.0 cannot carry, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def detail(event: ClickEvent, client: Client) -> Detail:
    """The ClickDetail of one recorded click."""
    return {
        "TrackingUrlId": event.link_id,
        "UserId": event.account_id,
        "PhoneNumber": event.phone_number,
        "TrackedUrl": event.target_url,
        "ClientIdentifier": event.client_identifier,
        "ClientRef": event.client_ref,
        "UserAgent": event.user_agent,
        "Referrer": event.client_ip,
        "DeviceName": client.device_name,
        "DeviceManufacturer": client.device_manufacturer,
        "IsWarningPageServed": event.warning_page_served,
        "ShortenDate": event.shortened_at_ms,
        "ClickDate": event.clicked_at_ms,
    }


def encode_detail(d: Detail) -> bytes:
    """A detail as stored in the outbox while it waits for a batch."""
    return orjson.dumps(d)


def decode_detail(stored: bytes) -> Detail:
    value: Detail = orjson.loads(stored)
    return value


def render(format: str, request_identifier: str, details: Sequence[Detail]) -> bytes:
    """The stored body of a delivery in `format` (json, xml or clickthru)."""
    if format == "json":
        return render_json(request_identifier, details)
    if format == "xml":
        return render_xml(request_identifier, details)
    if format == "clickthru" and len(details) == 1:
        return render_clickthru_event(request_identifier, details[0])
    raise ValueError(f"cannot render {len(details)} details as {format!r}")


def body_for_attempt(format: str, stored: bytes, attempt: int) -> bytes:
    """What is POSTed on attempt `attempt` (1-based): the stored body, or for
    clickthru and conversion the event in its envelope with the attempt counter."""
    if format in ("clickthru", "conversion"):
        return b'{"topic":"SCG-Message","attempt":%d,"event":%s}' % (attempt, stored)
    return stored


def json_date(ms: int) -> orjson.Fragment:
    return orjson.Fragment(b'"\\/Date(%d)\\/"' % ms)


def render_json(request_identifier: str, details: Sequence[Detail]) -> bytes:
    # Written out in JSON_ORDER (a literal is ~3x faster than a loop over the keys; a
    # test checks that the two agree).
    return orjson.dumps(
        {
            "RequestIdentifier": request_identifier,
            "ClickDetails": [
                {
                    "TrackedUrl": d["TrackedUrl"],
                    "ClientIdentifier": d["ClientIdentifier"],
                    "ClientRef": d["ClientRef"],
                    "TrackingUrlId": d["TrackingUrlId"],
                    "UserId": d["UserId"],
                    "PhoneNumber": d["PhoneNumber"],
                    "UserAgent": d["UserAgent"],
                    "Referrer": d["Referrer"],
                    "DeviceName": d["DeviceName"],
                    "DeviceManufacturer": d["DeviceManufacturer"],
                    "IsWarningPageServed": d["IsWarningPageServed"],
                    "ShortenDate": json_date(d["ShortenDate"]),
                    "ClickDate": json_date(d["ClickDate"]),
                }
                for d in details
            ],
        }
    )


def iso_date(ms: int) -> str:
    """ms since the epoch as ISO 8601 UTC with seven fractional digits."""
    seconds, millis = divmod(ms, 1000)
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}0000Z"


def _xml_value(key: str, value: Any) -> str:
    if key in _DATES:
        return iso_date(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(_NOT_XML.sub("", str(value)))


def render_xml(request_identifier: str, details: Sequence[Detail]) -> bytes:
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<ClickForward xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">',
        f"<RequestIdentifier>{escape(request_identifier)}</RequestIdentifier>",
        "<ClickDetails>",
    ]
    for d in details:
        lines.append("<ClickDetail>")
        lines.extend(
            f"<{key}>{_xml_value(key, d[key])}</{key}>" for key in XML_ORDER if d[key] is not None
        )
        lines.append("</ClickDetail>")
    lines += ["</ClickDetails>", "</ClickForward>"]
    return "\n".join(lines).encode()


def render_clickthru_event(request_identifier: str, d: Detail) -> bytes:
    phone = d["PhoneNumber"]
    return orjson.dumps(
        {
            "fld-val-list": {
                "previous_state": "DELIVERED",
                "new_state": "CLICKTHRU",
                "message_id": d["ClientRef"],
                "message_request_id": request_identifier,
                "to_address": f"+{phone}" if phone else None,
                "tracked_url": d["TrackedUrl"],
                "tracking_url_id": d["TrackingUrlId"],
                "client_identifier": d["ClientIdentifier"],
                "click_time": iso_date(d["ClickDate"]),
                "user_agent": d["UserAgent"],
                "reason_code": "200",
                "reason_description": "SUCCESS",
            }
        }
    )


# -- erasure by phone number (shortlink.erasures) --------------------------------------

# What an erasure removes from a click as a customer receives it: the number and the
# details tied to it (the clicker's address, user agent and referer).
_ERASED_DETAIL = ("PhoneNumber", "UserAgent", "Referrer")
_ERASED_EVENT = ("to_address", "user_agent", "metadata")
_XML_DETAIL = re.compile(r"<ClickDetail>\n.*?</ClickDetail>", re.DOTALL)
_XML_ERASED = re.compile(
    r"<(?:PhoneNumber|UserAgent|Referrer)>[^<]*</(?:PhoneNumber|UserAgent|Referrer)>\n"
)
_DATE = re.compile(r"/Date\((-?\d+)\)/")


def erased_detail(stored: bytes, phone: str) -> bytes | None:
    """An outbox detail without `phone` and its click's details; None if it is not
    that number's."""
    detail = decode_detail(stored)
    if detail.get("PhoneNumber") != phone:
        return None
    detail.update(dict.fromkeys(_ERASED_DETAIL))
    return encode_detail(detail)


def erased_body(format: str, body: bytes, phone: str) -> bytes | None:
    """A stored delivery body with `phone` and the details of its clicks removed (the
    other clicks of a batch as they were); None if the body holds none of that number's."""
    if format == "json":
        data = orjson.loads(body)
        details = data.get("ClickDetails") or []
        hit = [d for d in details if d.get("PhoneNumber") == phone]
        if not hit:
            return None
        for d in hit:
            d.update(dict.fromkeys(_ERASED_DETAIL))
        for d in details:
            for key in _DATES:
                match = _DATE.fullmatch(str(d.get(key)))
                if match:
                    d[key] = json_date(int(match[1]))
        return orjson.dumps(data)
    if format == "xml":
        text = body.decode()
        number = f"<PhoneNumber>{escape(phone)}</PhoneNumber>"
        if number not in text:
            return None

        def strip(match: re.Match[str]) -> str:
            block = match[0]
            return _XML_ERASED.sub("", block) if number in block else block

        return _XML_DETAIL.sub(strip, text).encode()
    if format in ("clickthru", "conversion"):
        data = orjson.loads(body)
        fields = data.get("fld-val-list") if isinstance(data, dict) else None
        if not isinstance(fields, dict) or fields.get("to_address") != f"+{phone}":
            return None
        for key in _ERASED_EVENT:
            if key in fields:
                fields[key] = None
        return orjson.dumps(data)
    return None
