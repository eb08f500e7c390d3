"""Request bodies in, JSON responses out: decode once at the edge with msgspec.

Bodiless POSTs and DELETEs (archive, delete) arrive with `content-length: 0` and, from the
TypeScript SDK, no content type at all: an empty body decodes as `{}`.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sessiond.store.errors import InvalidInputError, TooLargeError

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


@cache
def _decoder(cls: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(cls)


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 once it passes the app's `max_body_bytes`."""
    limit: int = request.app.state.config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, cls: type[T]) -> T:
    """Decode and validate the JSON body as `cls` (msgspec errors become 400 with `$.path`)."""
    raw = await read_body(request)
    if not raw.strip():
        raw = b"{}"
    decoder: msgspec.json.Decoder[T] = _decoder(cls)  # type: ignore[arg-type]
    return decoder.decode(raw)


def json_response(value: Any, status_code: int = 200) -> Response:
    """Encode a Struct (or builtins) as an `application/json` response."""
    return Response(_encoder.encode(value), status_code=status_code, media_type="application/json")


def raw_json_response(body: bytes, status_code: int = 200) -> Response:
    """Send bytes that are already JSON (records are stored encoded)."""
    return Response(body, status_code=status_code, media_type="application/json")


def require(condition: bool, message: str, code: str = "invalid_request") -> None:
    """Raise a 400 unless `condition` holds."""
    if not condition:
        raise InvalidInputError(message, code=code)
