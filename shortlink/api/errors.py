"""API errors: every failure is a JSON body `{"error": {"code", "message"[, "details"]}}`.

Handlers raise ApiError (or let aiohttp raise its HTTP exceptions); the middleware
turns them into responses. A body that aiohttp cannot decode while a handler reads
it (a Content-Encoding that is not what it says, a broken multipart body) is a
400. A database that cannot be reached, or takes no writes for now (no host of a
multi-host DATABASE_URL is a primary, or the one reached is a standby since a
failover), is a 503; after a failure that says the connections lead to a server
that is gone or is now a standby, the pools connect afresh. Anything else is a
defect: the last-resort guard logs it with its traceback and answers a bare 500
(counted by the metrics middleware like every answer), never the traceback; every
500 found is fixed at its cause with a 4xx. A failure after a streamed answer (a CSV file) has
begun drops the connection instead: no second answer can follow the first.
A request too malformed to parse (an unknown method, a NUL in a header, a line too
long) is answered 400 by aiohttp itself, in plain text, before any middleware, and
logged as a warning line without a traceback: anyone can send one, so it must not
be a cheap way to flood the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from shortlink import logs
from shortlink.db import needs_new_connections
from shortlink.pool import POOL, READ_POOL

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.details, self.headers)


class ValidationFailed(ApiError):
    """422: the request is well-formed JSON but some fields are wrong."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        first = details[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        super().__init__(
            422, "validation_failed", f"{first['field']}: {first['message']}{more}", details
        )


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error}),
        content_type="application/json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        answer = exc.response()
    except (web.RequestPayloadError, HttpProcessingError):
        # request.read() / post() of a body that is not what its headers say.
        message = "the body could not be read as sent (its Content-Encoding or chunks)"
        answer = error_response(400, "bad_request", message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = error_response(
            exc.status, _CODES.get(exc.status, "error"), exc.reason, headers=_allow(exc)
        )
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        # The server shutting down or restarting (SQLSTATE class 57).
        asyncpg.exceptions.OperatorInterventionError,
        # No host of the URL is a primary now (target_session_attrs=read-write).
        asyncpg.TargetServerAttributeNotMatched,
        asyncpg.ReadOnlySQLTransactionError,
    ) as exc:
        log.warning("database unavailable", extra={"error": repr(exc), "path": request.path})
        if needs_new_connections(exc):
            for pool in {request.app[POOL], request.app[READ_POOL]}:
                await pool.expire_connections()
        answer = error_response(503, "unavailable", "the service is unavailable; try again shortly")
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        answer = error_response(500, "internal", "internal error")
    if request.writer.output_size > 0:
        return _cut_short(request, answer.status)
    return answer


def _cut_short(request: web.Request, status: int) -> web.Response:
    """The handler failed after its streamed answer (a CSV file) had begun: a second answer
    cannot follow it, and ending the stream as usual would pass the part for the whole. So
    the connection is dropped (the client sees the transfer cut off), and the answer
    returned in its place, never sent, is only there to be counted."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=status)


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


# aiohttp's request handlers log through this logger (web.Application handler_args).
HTTP_LOG = logs.http_logger("shortlink.api.http", logging.WARNING)
