"""Reading request input field by field: every bad field named in one 422, nothing guessed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from aiohttp.test_utils import make_mocked_request

from shortlink.api import body
from shortlink.api.errors import ApiError, ValidationFailed


def fields(data: dict[str, object], allowed: set[str] | None = None) -> body.Fields:
    return body.Fields(data, body.Problems(), "recipients[3].", allowed)


def problems_of(read: body.Fields) -> list[dict[str, str]]:
    with pytest.raises(ValidationFailed) as failed:
        read.problems.check()
    return failed.value.details  # type: ignore[no-any-return]


def test_every_bad_field_is_named_under_its_prefix_in_one_422() -> None:
    """Two bad fields and an unknown one: all three reported, each with its full name."""
    read = fields({"name": 7, "count": "x", "typo": 1}, allowed={"name", "count"})
    assert read.text("name") is None
    assert read.integer("count", 5, minimum=0, maximum=10) == 5
    assert problems_of(read) == [
        {"field": "recipients[3].typo", "message": "is not a known field"},
        {"field": "recipients[3].name", "message": "must be a string"},
        {"field": "recipients[3].count", "message": "must be an integer"},
    ]


def test_null_is_not_given_and_required_says_so() -> None:
    """A null field takes the default; a required one missing is a problem."""
    read = fields({"a": None})
    assert not read.has("a")
    assert read.text("a", default="d") == "d"
    assert read.boolean("a", True) is True
    assert read.text("b", required=True) is None
    assert problems_of(read) == [{"field": "recipients[3].b", "message": "is required"}]


def test_text_bounds_and_unstorable_text_are_problems() -> None:
    """Too short, too long and a NUL are refused; good text comes back as sent."""
    read = fields({"empty": "", "long": "x" * 11, "nul": "a\x00b", "ok": "café"})
    assert read.text("empty", min_length=1) is None
    assert read.text("long", max_length=10) is None
    assert read.text("nul") is None
    assert read.text("ok") == "café"
    assert [p["field"] for p in problems_of(read)] == [
        "recipients[3].empty",
        "recipients[3].long",
        "recipients[3].nul",
    ]


def test_numbers_keep_what_was_sent_and_integers_accept_a_whole_float() -> None:
    """30.0 is the integer 30; 0.1 stays exactly 0.1; booleans are not numbers."""
    read = fields({"n": 30.0, "v": 0.1, "b": True, "big": 11})
    assert read.integer("n", 0, minimum=0, maximum=100) == 30
    assert read.number("v", minimum=0, maximum=1) == Decimal("0.1")
    assert read.number("b", minimum=0, maximum=1) is None
    assert read.integer("big", 1, minimum=0, maximum=10) == 1
    assert [p["message"] for p in problems_of(read)] == [
        "must be a number",
        "must be between 0 and 10",
    ]


def test_arrays_are_bounded_item_by_item() -> None:
    """texts() names the first item too long; array() refuses too many items."""
    read = fields({"tags": ["ok", "x" * 9], "list": [1, 2, 3]})
    assert read.texts("tags", max_items=5, max_length=8) is None
    assert read.array("list", max_items=2) is None
    assert read.texts("none", max_items=1, max_length=1) is None
    assert [p["field"] for p in problems_of(read)] == [
        "recipients[3].tags[1]",
        "recipients[3].list",
    ]


def test_problems_stop_listing_at_the_limit_and_count_the_rest() -> None:
    """A thousand bad recipients give MAX_DETAILS details and one "(more)" entry."""
    problems = body.Problems()
    for i in range(body.MAX_DETAILS + 20):
        problems.add(f"recipients[{i}]", "bad")
    with pytest.raises(ValidationFailed) as failed:
        problems.check()
    details = failed.value.details
    assert len(details) == body.MAX_DETAILS + 1
    assert details[-1] == {"field": "(more)", "message": "20 more"}


def test_no_problem_is_no_error() -> None:
    """check() passes when every field was fine."""
    body.Problems().check()


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        ("text/plain", b"{}", 415),
        ("application/json", b"{not json", 400),
        ("application/json", b"[1, 2]", 422),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    content_type: str, raw: bytes, status: int
) -> None:
    """Another media type is 415, broken JSON 400, JSON that is not an object 422."""
    request = make_mocked_request("POST", "/v1/links", headers={"Content-Type": content_type})
    request._read_bytes = raw  # what request.read() answers
    with pytest.raises(ApiError) as refused:
        await body.json_object(request)
    assert refused.value.status == status


async def test_a_json_object_is_read() -> None:
    """The body's object comes back as a dict."""
    request = make_mocked_request("POST", "/v1/links", headers={"Content-Type": "application/json"})
    request._read_bytes = b'{"url": "https://e.example/"}'
    assert await body.json_object(request) == {"url": "https://e.example/"}
