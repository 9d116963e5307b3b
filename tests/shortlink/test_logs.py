"""Structured logs: one JSON object a line, extras as keys; unparseable requests in one line."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from shortlink.logs import JsonFormatter, configure, http_logger, malformed_requests
from tests.infra import unique_name


def record(
    message: str = "delivery failed %s",
    *args: object,
    level: int = logging.WARNING,
    exc: BaseException | None = None,
    name: str = "forwarder.delivery",
    **extra: object,
) -> logging.LogRecord:
    """A log record as logger `name`.log(level, message, *args, extra=extra) would make it."""
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.getLogger(name).makeRecord(
        name, level, __file__, 1, message, args, exc_info, extra=extra
    )


def test_a_record_is_one_json_object_with_its_extras() -> None:
    """time (UTC, ms), level, logger, message, pid, and every extra as a key, on one line."""
    line = JsonFormatter().format(record("attempt %d", 3, endpoint_id=7, error="HTTP 503"))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry == {
        "time": entry["time"],
        "level": "warning",
        "logger": "forwarder.delivery",
        "message": "attempt 3",
        "pid": os.getpid(),
        "endpoint_id": 7,
        "error": "HTTP 503",
    }
    assert entry["time"].endswith("+00:00")
    assert len(entry["time"].split("T")[1].split("+")[0]) == len("12:00:00.000")


def test_an_exception_is_one_field_and_odd_extras_are_text() -> None:
    """A traceback is the `exception` field (still one line); an extra JSON cannot hold is
    written as its text."""
    try:
        raise ValueError("boom")
    except ValueError as exc:
        line = JsonFormatter().format(record("failed", exc=exc, where=object()))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert "ValueError: boom" in entry["exception"]
    assert entry["where"].startswith("<object object at")


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The logging set-up as it was before the test, put back after it."""
    root, kafka = logging.getLogger(), logging.getLogger("aiokafka")
    handlers, level, kafka_level = root.handlers[:], root.level, kafka.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    kafka.setLevel(kafka_level)


@pytest.mark.usefixtures("root_logging")
def test_configure_writes_json_to_stderr_at_the_level_and_quiets_aiokafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After configure("INFO"), records at INFO and above go to stderr as JSON, DEBUG does
    not, and aiokafka's reconnect errors are silenced unless the level is DEBUG."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure("INFO")
    logger = logging.getLogger(unique_name("test.logs"))
    logger.debug("hidden")
    logger.info("shown", extra={"clicks": 3})
    [line] = stderr.getvalue().splitlines()
    assert orjson.loads(line)["message"] == "shown"
    assert orjson.loads(line)["clicks"] == 3
    assert not logging.getLogger("aiokafka").isEnabledFor(logging.ERROR)
    configure("DEBUG")
    assert logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG)


def test_an_unparseable_request_is_one_line_at_the_level_asked_and_counted() -> None:
    """aiohttp's error with traceback for bytes that are not HTTP (or a body that does not
    decode) becomes one line at the logger's level, without traceback, and is counted."""
    logger = http_logger(unique_name("test.http"), logging.INFO)
    assert http_logger(logger.name, logging.INFO) is logger
    assert len(logger.filters) == 1  # asked twice, filtered once
    [refuse] = logger.filters
    logger.setLevel(logging.WARNING)  # whatever level other tests left on the root logger
    bad = record(
        "Error handling request", level=logging.ERROR, exc=BadHttpMessage("bad"), name=logger.name
    )
    assert refuse.filter(bad) is False  # INFO is not enabled at WARNING
    assert (bad.levelno, bad.exc_info) == (logging.INFO, None)
    assert bad.getMessage().startswith("malformed request refused: ")
    payload = RequestPayloadError("cannot decode")
    payload.__cause__ = BadHttpMessage("gzip")
    decoded = record("Error handling request", level=logging.ERROR, exc=payload, name=logger.name)
    logger.setLevel(logging.INFO)
    assert refuse.filter(decoded) is True
    assert malformed_requests(logger) == 2


def test_other_errors_are_left_as_they_are() -> None:
    """An error that is not an unparseable request keeps its level and traceback."""
    logger = http_logger(unique_name("test.http"), logging.INFO)
    [refuse] = logger.filters
    error = record(
        "Error handling request", level=logging.ERROR, exc=RuntimeError("ours"), name=logger.name
    )
    assert refuse.filter(error) is True
    assert error.levelno == logging.ERROR
    assert error.exc_info is not None
    assert malformed_requests(logger) == 0
