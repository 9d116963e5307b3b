"""ClickForward JSON and XML, and the first-click event, against the seed's examples."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson

from forwarder import formats

# The first ClickDetail of the seed's JSON example, as a detail.
SEED_DETAIL: formats.Detail = {
    "TrackedUrl": "https://dotdigital.com/",
    "ClientIdentifier": "My Campaign Manager Campaign Name",
    "ClientRef": None,
    "TrackingUrlId": 716005,
    "UserId": 1,
    "PhoneNumber": "447700900000",
    "UserAgent": "Mozilla/5.0 (BlackBerry; U; BlackBerry 9800; en-US) AppleWebKit/534.8+ "
    "(KHTML, like Gecko) Version/6.0.0.446 Mobile",
    "Referrer": "127.0.0.1",
    "DeviceName": "BlackBerry 9800",
    "DeviceManufacturer": "BlackBerry",
    "IsWarningPageServed": False,
    "ShortenDate": 1382000166965,
    "ClickDate": 1382000769338,
}
SEED_JSON = (
    '{"RequestIdentifier":"1c712b5c-af6d-4527-b6d7-5ebb199f174d","ClickDetails":[{'
    '"TrackedUrl":"https://dotdigital.com/",'
    '"ClientIdentifier":"My Campaign Manager Campaign Name","ClientRef":null,'
    '"TrackingUrlId":716005,"UserId":1,"PhoneNumber":"447700900000",'
    '"UserAgent":"Mozilla/5.0 (BlackBerry; U; BlackBerry 9800; en-US) AppleWebKit/534.8+ '
    '(KHTML, like Gecko) Version/6.0.0.446 Mobile",'
    '"Referrer":"127.0.0.1","DeviceName":"BlackBerry 9800","DeviceManufacturer":"BlackBerry",'
    '"IsWarningPageServed":false,"ShortenDate":"\\/Date(1382000166965)\\/",'
    '"ClickDate":"\\/Date(1382000769338)\\/"}]}'
)


def test_json_is_the_seed_example_byte_for_byte() -> None:
    """The seed's JSON example, minus its whitespace, is exactly what we render."""
    body = formats.render_json("1c712b5c-af6d-4527-b6d7-5ebb199f174d", [SEED_DETAIL])
    assert body.decode() == SEED_JSON
    parsed = orjson.loads(body)
    assert parsed["ClickDetails"][0]["ShortenDate"] == "/Date(1382000166965)/"


def test_xml_matches_the_seed_example_field_by_field() -> None:
    """The XML envelope, namespaces, element order, values and date format follow the seed."""
    detail = {**SEED_DETAIL, "ClientIdentifier": "My Identifier", "ClientRef": None}
    body = formats.render_xml("44e2c952-ff50-4774-a013-3fd1380355e7", [detail, detail])
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<ClickForward xmlns:xsi=')
    assert b'xmlns:xsd="http://www.w3.org/2001/XMLSchema"' in body
    root = ET.fromstring(body)
    assert root.tag == "ClickForward"
    assert root.findtext("RequestIdentifier") == "44e2c952-ff50-4774-a013-3fd1380355e7"
    details = root.findall("ClickDetails/ClickDetail")
    assert len(details) == 2
    assert [child.tag for child in details[0]] == [
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
    ]  # ClientRef is null: left out, as the seed's example does
    values = {child.tag: child.text for child in details[0]}
    assert values["TrackingUrlId"] == "716005"
    assert values["IsWarningPageServed"] == "false"
    assert values["ShortenDate"] == "2013-10-17T08:56:06.9650000Z"
    assert values["ClickDate"] == "2013-10-17T09:06:09.3380000Z"
    assert values["DeviceName"] == "BlackBerry 9800"


def test_xml_escapes_and_drops_what_xml_cannot_carry() -> None:
    """Markup in a user agent is escaped and control characters are removed."""
    detail = {**SEED_DETAIL, "UserAgent": "a<b>&c\x00\x1f d", "ClientRef": "r&1"}
    root = ET.fromstring(formats.render_xml("x", [detail]))
    element = root.find("ClickDetails/ClickDetail")
    assert element is not None
    assert element.findtext("UserAgent") == "a<b>&c d"
    assert element.findtext("ClientRef") == "r&1"


def test_iso_dates_have_seven_fractional_digits() -> None:
    """Dates in XML are UTC with seven fractional digits."""
    assert formats.iso_date(0) == "1970-01-01T00:00:00.0000000Z"
    assert formats.iso_date(1382000769338) == "2013-10-17T09:06:09.3380000Z"


def test_clickthru_event_carries_the_attempt() -> None:
    """The first-click event is a CLICKTHRU state change whose envelope counts attempts."""
    stored = formats.render("clickthru", "rid-1", [{**SEED_DETAIL, "ClientRef": "msg-7"}])
    first = orjson.loads(formats.body_for_attempt("clickthru", stored, 1))
    third = orjson.loads(formats.body_for_attempt("clickthru", stored, 3))
    assert (first["attempt"], third["attempt"]) == (1, 3)
    assert first["topic"] == "SCG-Message"
    event = first["event"]["fld-val-list"]
    assert event["previous_state"] == "DELIVERED"
    assert event["new_state"] == "CLICKTHRU"
    assert event["message_id"] == "msg-7"
    assert event["to_address"] == "+447700900000"
    assert event["tracked_url"] == "https://dotdigital.com/"
    assert event["click_time"] == "2013-10-17T09:06:09.3380000Z"


def test_json_keys_follow_the_declared_order() -> None:
    """render_json writes every ClickDetail's keys exactly in JSON_ORDER."""
    body = orjson.loads(formats.render_json("1c712b5c-af6d-4527-b6d7-5ebb199f174d", [SEED_DETAIL]))
    assert tuple(body["ClickDetails"][0]) == formats.JSON_ORDER


ERASED = "447700900000"
OTHER_DETAIL: formats.Detail = {**SEED_DETAIL, "PhoneNumber": "447700900111", "TrackingUrlId": 2}
REQUEST_ID = "1c712b5c-af6d-4527-b6d7-5ebb199f174d"


def test_an_erased_number_leaves_a_batch_as_if_rendered_without_its_details() -> None:
    """JSON and XML: the erased number's PhoneNumber, UserAgent and Referrer go, byte for byte
    as if rendered so; the other clicks of the batch stay as they were."""
    blank = {**SEED_DETAIL, "PhoneNumber": None, "UserAgent": None, "Referrer": None}
    for render in (formats.render_json, formats.render_xml):
        format = "json" if render is formats.render_json else "xml"
        body = render(REQUEST_ID, [SEED_DETAIL, OTHER_DETAIL])
        assert formats.erased_body(format, body, ERASED) == render(
            REQUEST_ID, [blank, OTHER_DETAIL]
        )
        assert formats.erased_body(format, body, "4477009") is None  # a part is no number
        assert formats.erased_body(format, render(REQUEST_ID, [OTHER_DETAIL]), ERASED) is None


def test_an_erased_number_leaves_events_and_outbox_details_without_it() -> None:
    """CLICKTHRU and CONVERTED events lose to_address, user_agent and metadata; an outbox
    detail loses the number, agent and address; another number's are left alone."""
    event = formats.render_clickthru_event(REQUEST_ID, SEED_DETAIL)
    erased = orjson.loads(formats.erased_body("clickthru", event, ERASED) or b"")
    fields = erased["fld-val-list"]
    assert (fields["to_address"], fields["user_agent"]) == (None, None)
    assert fields["tracking_url_id"] == 716005
    assert formats.erased_body("clickthru", event, "447700900111") is None
    stored = formats.encode_detail(SEED_DETAIL)
    detail = orjson.loads(formats.erased_detail(stored, ERASED) or b"")
    assert (detail["PhoneNumber"], detail["UserAgent"], detail["Referrer"]) == (None, None, None)
    assert formats.erased_detail(stored, "447700900111") is None
    assert formats.erased_body("conversion", b'{"fld-val-list": 3}', ERASED) is None
