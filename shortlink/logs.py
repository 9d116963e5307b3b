"""Structured logs: one JSON object per line on stderr.

Fields passed with `extra={...}` become keys of the object. Nothing is logged per
successful redirect.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        entry.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str) -> None:
    """Send every log record to stderr as JSON at `level` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every failed reconnect attempt at ERROR, many a second during a
    # broker outage; our publisher and consumer report outages once. DEBUG shows all.
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)


class MalformedRequests(logging.Filter):
    """Turns aiohttp's error-with-traceback for a request it cannot parse into one line.

    A client sending bytes that are not HTTP is not a failure of ours, and a
    traceback per such request would be a cheap way to flood the logs: the line
    gets `level`, and the requests are counted. A body that does not decode as its
    Content-Encoding says is one too: after the handler has answered 400, aiohttp
    reads what is left of it and logs the same error again.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RequestPayloadError):
            error = error.__cause__
        if isinstance(error, HttpProcessingError):
            self.count += 1
            record.levelno, record.levelname = self.level, logging.getLevelName(self.level)
            record.msg, record.args = "malformed request refused: %.200s", (error.message,)
            record.exc_info = record.exc_text = None
            return logging.getLogger(record.name).isEnabledFor(self.level)
        return True


def http_logger(name: str, level: int) -> logging.Logger:
    """A logger for aiohttp's request handlers that logs unparseable requests at `level`."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, MalformedRequests) for f in logger.filters):
        logger.addFilter(MalformedRequests(level))
    return logger


def malformed_requests(logger: logging.Logger) -> int:
    """How many unparseable requests `logger` has seen (see http_logger)."""
    return sum(f.count for f in logger.filters if isinstance(f, MalformedRequests))
