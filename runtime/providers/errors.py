"""Translate the SDKs' exceptions into ours, once, where they enter (`raise … from exc`).

429 → RateLimitedError (with the server's retry-after); 529/503/overloaded →
UnavailableError `model_overloaded`; other 5xx, timeouts and dropped connections →
UnavailableError `model_request_failed`; 401/403 → AuthenticationError /
PermissionDeniedError (not retryable); other 4xx → InvalidInputError (not retryable).
Messages never include the API key (the SDKs do not put it in their messages).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from sessiond.store.errors import (
    AppError,
    AuthenticationError,
    InvalidInputError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)


def retry_after_s(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def from_status(provider: str, status: int, message: str, headers: Any) -> AppError:
    """Our error for an HTTP error status from a provider."""
    text = f"{provider}: {message}"
    if status == 429:
        return RateLimitedError(
            text, code="model_rate_limited", retry_after_s=retry_after_s(headers)
        )
    if status in (503, 529):
        return UnavailableError(text, code="model_overloaded")
    if status >= 500 or status in (408, 409):
        return UnavailableError(text, code="model_request_failed")
    if status == 401:
        return AuthenticationError(text, code="model_auth_failed")
    if status == 403:
        return PermissionDeniedError(text, code="model_auth_failed")
    return InvalidInputError(text, code="model_request_invalid")


def connection_error(provider: str, message: str) -> AppError:
    """Timeouts and dropped connections: retryable."""
    return UnavailableError(f"{provider}: {message}", code="model_request_failed")
