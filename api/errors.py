"""The one mapping from sessiond's error tree to HTTP, rendered as the Anthropic error body.

The SDK picks its exception class from the status code, then from
`error.details.error_code`, so both must be right for `except anthropic.NotFoundError`
to work against us. Deterministic conflicts carry `x-should-retry: false`: the SDK
retries every 409 otherwise.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sessiond.store.clock import new_id
from sessiond.store.errors import (
    AppError,
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitedError,
    TooLargeError,
    UnavailableError,
)

log = logging.getLogger("sessiond.api")

# Most specific class first: TooLargeError is an InvalidInputError.
_STATUS: list[tuple[type[AppError], int, str]] = [
    (TooLargeError, 413, "request_too_large"),
    (InvalidInputError, 400, "invalid_request_error"),
    (AuthenticationError, 401, "authentication_error"),
    (PermissionDeniedError, 403, "permission_error"),
    (NotFoundError, 404, "not_found_error"),
    (PreconditionFailedError, 412, "invalid_request_error"),
    (ConflictError, 409, "conflict_error"),
    (RateLimitedError, 429, "rate_limit_error"),
    (UnavailableError, 503, "overloaded_error"),
]

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    """`error` member of the Anthropic error body."""

    type: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(msgspec.Struct):
    """The Anthropic error body: `{"type": "error", "error": {...}, "request_id": ...}`."""

    error: ErrorDetail
    request_id: str
    type: str = "error"


_encode = msgspec.json.Encoder().encode


def status_of(exc: AppError) -> tuple[int, str]:
    """HTTP status and Anthropic `error.type` for one of our errors."""
    for cls, status, error_type in _STATUS:
        if isinstance(exc, cls):
            return status, error_type
    return 500, "api_error"


def error_body(error_type: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """Encode an Anthropic error body (also used for the SSE `error` frame)."""
    detail = ErrorDetail(type=error_type, message=message, details=details)
    return _encode(ErrorBody(error=detail, request_id=new_id("req")))


def _render(
    status: int,
    error_type: str,
    message: str,
    details: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = error_body(error_type, message, details)
    request_id = msgspec.json.decode(body)["request_id"]
    all_headers = {"request-id": request_id, **(headers or {})}
    return Response(body, status_code=status, media_type="application/json", headers=all_headers)


async def handle_app_error(request: Request, exc: Exception) -> Response:
    """Render one of our errors."""
    assert isinstance(exc, AppError)
    status, error_type = status_of(exc)
    details = {"error_code": exc.code, **exc.details}
    headers: dict[str, str] = {}
    if isinstance(exc, ConflictError) and not exc.retryable:
        headers["x-should-retry"] = "false"
    if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after_s)))
    if status == 500:
        log.error("unmapped application error %r", exc)
    return _render(status, error_type, exc.message, details, headers)


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    """msgspec's decode and validation errors are the client's: 400 with the `$.path` message."""
    return _render(400, "invalid_request_error", str(exc), {"error_code": "invalid_request"})


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown path or method) in the Anthropic shape."""
    assert isinstance(exc, HTTPException)
    error_type = _HTTP_TYPES.get(exc.status_code, "api_error")
    return _render(exc.status_code, error_type, str(exc.detail), None, dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything else is a bug: log the traceback, answer 500 `api_error`."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _render(500, "api_error", "internal server error", None)


EXCEPTION_HANDLERS = {
    AppError: handle_app_error,
    msgspec.ValidationError: handle_validation_error,
    msgspec.DecodeError: handle_validation_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
