"""Every error type of sessiond, in one closed tree.

It lives in `store` only because store is the bottom layer that every package may
import; it holds no logic. `api/errors.py` owns the one mapping to HTTP.

    AppError
    ├── NotFoundError          the thing does not exist (or is not visible to this workspace)
    ├── ConflictError          the state moved on: seq mismatch, version mismatch, duplicate id
    │   └── PreconditionFailedError  a request's stated precondition no longer holds (412)
    ├── InvalidInputError      the request itself is wrong; retrying it cannot help
    │   └── TooLargeError      the request body is over the configured limit
    ├── AuthenticationError    no credentials, or credentials we do not know
    ├── PermissionDeniedError  known credentials, not allowed to do this
    ├── UnavailableError       a dependency is down or overloaded; retryable
    └── RateLimitedError       a dependency said slow down; retryable after `retry_after_s`

Each error carries a stable `code` (`"session_not_found"`, `"seq_conflict"`), a human
message and a `retryable` flag. Add a class only when some caller must `except` it
differently; otherwise give an existing class a new `code`.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Root of every error sessiond raises on purpose."""

    default_code = "error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        if retryable is not None:
            self.retryable = retryable
        self.details: dict[str, Any] = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class NotFoundError(AppError):
    """The addressed resource does not exist, or belongs to another workspace."""

    default_code = "not_found"


class ConflictError(AppError):
    """The state moved on under the caller: nothing was written."""

    default_code = "conflict"


class PreconditionFailedError(ConflictError):
    """The request named a state (`expected_last_heartbeat`) that is not the current one."""

    default_code = "precondition_failed"


class InvalidInputError(AppError):
    """The request is malformed or breaks a rule; nothing was written."""

    default_code = "invalid_request"


class TooLargeError(InvalidInputError):
    """The request body is over the configured size limit."""

    default_code = "request_too_large"


class AuthenticationError(AppError):
    """Missing or unknown credentials."""

    default_code = "authentication_failed"


class PermissionDeniedError(AppError):
    """Known credentials that may not perform this operation."""

    default_code = "permission_denied"


class UnavailableError(AppError):
    """A dependency is down, overloaded or shutting down; the caller may retry."""

    default_code = "unavailable"
    retryable = True


class RateLimitedError(AppError):
    """A dependency asked us to slow down."""

    default_code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s
