"""Request bodies in, JSON responses out: decode once at the edge with msgspec.

Bodiless POSTs and DELETEs (archive, delete) arrive with `content-length: 0` and, from the
TypeScript SDK, no content type at all: an empty body decodes as `{}`.
"""

from __future__ import annotations

import re
from array import array
from functools import cache
from itertools import accumulate
from typing import Any, TypeVar

import anyio
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


MAX_JSON_DEPTH = 64
"""Nesting a request body may have. Deeper JSON reached a RecursionError at whichever layer
took it apart (the decoder, the event probe, a schema check, an encode): refused here, at
the edge, before anything is written. Real bodies (tool schemas included) nest far less."""

# A JSON string, or an unterminated one up to the end: possessive, and every quote's match
# ends at the next closing quote or at the end, so the whole scan is linear (a pattern
# that failed on an unterminated string was tried again at each later quote: quadratic).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+\\?(?:"|\Z)', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_CHUNK = 1 << 20


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text `raw` nests deeper than `limit` anywhere, balanced or not,
    found without parsing it, in linear time: strings are cut out, the brackets become
    +1/-1 steps, and the running depth is summed at C speed a chunk at a time (a body
    with few brackets is not scanned at all)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    steps = _JSON_STRING.sub(b"", raw).translate(_BRACKET_STEPS, _NOT_A_BRACKET)
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        chunk = array("b", steps[start : start + _CHUNK])
        if max(accumulate(chunk, initial=depth)) > limit:
            return True
        depth += sum(chunk)
    return False


async def decode_body(request: Request, cls: type[T]) -> T:
    """Decode and validate the JSON body as `cls` (msgspec errors become 400 with `$.path`)."""
    raw = await read_body(request)
    if not raw.strip():
        raw = b"{}"
    # A large body is scanned in a worker thread: its chunks let the loop run between them.
    deep = await anyio.to_thread.run_sync(too_deep, raw) if len(raw) > _CHUNK else too_deep(raw)
    if deep:
        raise InvalidInputError(
            f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep"
        )
    decoder: msgspec.json.Decoder[T] = _decoder(cls)  # type: ignore[arg-type]
    try:
        return decoder.decode(raw)
    except RecursionError:  # a backstop: too_deep should have refused it
        raise InvalidInputError("request body: JSON nested too deeply", code="too_deep") from None


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
