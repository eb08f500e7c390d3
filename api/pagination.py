"""Opaque `page_…` cursors and the `{"data", "next_page"}` envelope the SDK pages through.

Three cursor shapes, each with its reader: a record keyset `(created_at, id)` for lists of
records (`keyset_cursor`), a sequence number for logs and versions (`seq_cursor`), and a
keyset with a direction for the sessions list, which pages both ways (`directed_cursor`).

The SDK keeps paging while `next_page` is truthy, so the last page always says `null`.
A cursor is the keyset position of the last row sent (plus the direction it was taken
in), so a page is one index seek however deep it is.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from starlette.requests import Request

from sessiond.store.errors import InvalidInputError

_PREFIX = "page_"


def encode_cursor(*parts: Any) -> str:
    """Encode a keyset position (JSON-able parts) as an opaque `page_…` string."""
    raw = msgspec.json.encode(list(parts))
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """Inverse of `encode_cursor`; a cursor we did not make is a 400."""
    if not cursor.startswith(_PREFIX):
        raise InvalidInputError("page: not a cursor this server issued", code="invalid_cursor")
    body = cursor[len(_PREFIX) :]
    try:
        parts = msgspec.json.decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise InvalidInputError("page: malformed cursor", code="invalid_cursor") from None
    if not isinstance(parts, list) or not all(_sane(p) for p in parts):
        raise InvalidInputError("page: malformed cursor", code="invalid_cursor")
    return parts


def _page(request: Request) -> str | None:
    return request.query_params.get("page") or None


def _malformed() -> InvalidInputError:
    return InvalidInputError("page: malformed cursor", code="invalid_cursor")


def keyset_cursor(request: Request) -> tuple[str, str] | None:
    """The `(created_at, id)` a record list's `page` resumes after, if any."""
    page = _page(request)
    if page is None:
        return None
    parts = decode_cursor(page)
    if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
        raise _malformed()
    return parts[0], parts[1]


def seq_cursor(request: Request) -> int | None:
    """The sequence number a log's or a version list's `page` resumes after, if any."""
    page = _page(request)
    if page is None:
        return None
    parts = decode_cursor(page)
    if len(parts) != 1 or not isinstance(parts[0], int):
        raise _malformed()
    return int(parts[0])


def directed_cursor(request: Request) -> tuple[str, str, bool] | None:
    """`(created_at, id, backwards)` of a two-way list's `page`, if any."""
    page = _page(request)
    if page is None:
        return None
    parts = decode_cursor(page)
    if (
        len(parts) != 3
        or parts[2] not in ("next", "prev")
        or not all(isinstance(p, str) for p in parts[:2])
    ):
        raise _malformed()
    return parts[0], parts[1], parts[2] == "prev"


def _sane(part: Any) -> bool:
    """Cursors hold strings and seqs: an int past 64 bits or a float never came from us."""
    if isinstance(part, bool):
        return False
    if isinstance(part, int):
        return 0 <= part < 2**63
    return isinstance(part, str)


def page_body(
    items: list[bytes],
    next_page: str | None,
    prev_page: str | None = None,
    *,
    bidirectional: bool = False,
) -> bytes:
    """Assemble a page from already-encoded JSON items without decoding them again."""
    out = bytearray(b'{"data":[')
    out += b",".join(items)
    out += b'],"next_page":'
    out += msgspec.json.encode(next_page)
    if bidirectional:
        out += b',"prev_page":'
        out += msgspec.json.encode(prev_page)
    out += b"}"
    return bytes(out)
