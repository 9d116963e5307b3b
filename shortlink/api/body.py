"""Reading request input: JSON bodies, query strings and path parts, field by field.

Problems are collected, not raised one by one, so a 422 names every bad field
(`recipients[41].phone_number`) at once, up to a limit. Unknown body fields are
refused too: a misspelt option should not be silently ignored. A field given as
null is taken as not given. Text that cannot be stored (a NUL, bytes that were
not UTF-8) is refused like any other bad value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from shortlink import validation
from shortlink.api.errors import ApiError, ValidationFailed

MAX_DETAILS = 100
MAX_PAGE = 1000  # items per page of a listing (limit)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 when it is not JSON, 422 when not an object)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed([{"field": "(body)", "message": "must be a JSON object"}])
    return data


class Problems:
    """Collects field errors; `check()` raises them as one 422."""

    def __init__(self) -> None:
        self.details: list[dict[str, str]] = []
        self.count = 0

    def add(self, field: str, message: str) -> None:
        self.count += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append({"field": field, "message": message})

    def check(self) -> None:
        if self.details:
            if self.count > len(self.details):
                self.details.append(
                    {"field": "(more)", "message": f"{self.count - len(self.details)} more"}
                )
            raise ValidationFailed(self.details)


class Fields:
    """Typed access to one JSON object's (or query's) fields, reporting problems under `prefix`."""

    def __init__(
        self,
        data: Mapping[str, Any],
        problems: Problems,
        prefix: str = "",
        allowed: set[str] | None = None,
    ) -> None:
        self.data = data
        self.problems = problems
        self.prefix = prefix
        if allowed is not None:
            for name in data:
                if name not in allowed:
                    problems.add(self.name(name), "is not a known field")

    def name(self, field: str) -> str:
        return f"{self.prefix}{field}"

    def has(self, field: str) -> bool:
        """Whether the field is given (null counts as not given)."""
        return self.data.get(field) is not None

    def text(
        self,
        field: str,
        *,
        required: bool = False,
        min_length: int = 0,
        max_length: int = 1000,
        default: str | None = None,
    ) -> str | None:
        value = self.data.get(field)
        if value is None:
            if required:
                self.problems.add(self.name(field), "is required")
            return default
        if not isinstance(value, str):
            self.problems.add(self.name(field), "must be a string")
            return default
        if len(value) < min_length:
            self.problems.add(self.name(field), "must not be empty")
            return default
        if len(value) > max_length:
            self.problems.add(self.name(field), f"must be at most {max_length} characters")
            return default
        return self.converted(field, value, validation.text, default)

    def texts(self, field: str, *, max_items: int, max_length: int) -> list[str] | None:
        """An array of at most `max_items` strings of at most `max_length` characters that can
        be stored, or None when not given."""
        value = self.data.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.add(self.name(field), "must be an array of strings")
            return None
        if len(value) > max_items:
            self.problems.add(self.name(field), f"must have at most {max_items:,} items")
            return None
        for index, item in enumerate(value):
            if len(item) > max_length:
                self.problems.add(
                    self.name(f"{field}[{index}]"), f"must be at most {max_length:,} characters"
                )
                return None
            if self.converted(f"{field}[{index}]", item, validation.text) is None:
                return None
        return value

    def page_limit(self, field: str = "limit", *, default: int = 100) -> int:
        """A listing's page size: ASCII digits from 1 to MAX_PAGE (what every listing takes)."""
        value = self.data.get(field)
        if value is None:
            return default
        if not (
            isinstance(value, str)
            and len(value) <= 10  # leading zeros are fine; no int() of a huge text
            and value.isascii()
            and value.isdigit()
            and 1 <= int(value) <= MAX_PAGE
        ):
            self.problems.add(self.name(field), f"must be an integer from 1 to {MAX_PAGE}")
            return default
        return int(value)

    def boolean(self, field: str, default: bool) -> bool:
        value = self.data.get(field)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.add(self.name(field), "must be true or false")
            return default
        return value

    def integer(self, field: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.data.get(field)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 30.0 is the integer 30
        if not isinstance(value, int) or isinstance(value, bool):
            self.problems.add(self.name(field), "must be an integer")
            return default
        if not minimum <= value <= maximum:
            self.problems.add(self.name(field), f"must be between {minimum} and {maximum}")
            return default
        return value

    def number(self, field: str, *, minimum: float, maximum: float) -> Decimal | None:
        """A JSON number within bounds, exactly as sent (0.1 stays 0.1); None if not given."""
        value = self.data.get(field)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.problems.add(self.name(field), "must be a number")
            return None
        if not minimum <= value <= maximum:
            self.problems.add(self.name(field), f"must be between {minimum:g} and {maximum:g}")
            return None
        # repr is the shortest text that reads back as the same float: the number as sent.
        return Decimal(repr(value) if isinstance(value, float) else value)

    def array(self, field: str, *, max_items: int) -> list[Any] | None:
        value = self.data.get(field)
        if value is None:
            return None
        if not isinstance(value, list):
            self.problems.add(self.name(field), "must be an array")
            return None
        if len(value) > max_items:
            self.problems.add(self.name(field), f"must have at most {max_items:,} items")
            return None
        return value

    def converted(
        self,
        field: str,
        value: str | None,
        convert: Callable[[str], str],
        default: str | None = None,
    ) -> str | None:
        """`convert(value)`, reporting a ValueError as this field's problem."""
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            self.problems.add(self.name(field), str(exc))
            return default
