"""Query-string parsing as the SDK sends it: bracketed arrays and ranges, lenient datetimes."""

from __future__ import annotations

from starlette.requests import Request

from sessiond.store.clock import parse_ts
from sessiond.store.errors import InvalidInputError

_LARGEST = 2**31 - 1
"""No integer parameter means more (versions, limits); past it, databases overflow."""


def query_list(request: Request, name: str) -> list[str]:
    """Values of an array parameter, sent as `name[]=a&name[]=b` (SDK) or `name=a&name=b`."""
    params = request.query_params
    return params.getlist(f"{name}[]") + params.getlist(name)


def query_int(
    request: Request,
    name: str,
    *,
    default: int | None,
    minimum: int = 1,
    maximum: int | None = None,
) -> int | None:
    """An integer parameter; values above `maximum` are clamped (the SDK asks for 1000 events)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise InvalidInputError(f"{name}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        value = maximum
    if value > _LARGEST:
        raise InvalidInputError(f"{name}: must be at most {_LARGEST}, got {raw}")
    return value


def query_bool(request: Request, name: str, *, default: bool = False) -> bool:
    """`true`/`false` (also 1/0)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidInputError(f"{name}: expected true or false, got {raw!r}")


def query_choice(request: Request, name: str, choices: tuple[str, ...], default: str) -> str:
    """A parameter that must be one of `choices`."""
    raw = request.query_params.get(name) or default
    if raw not in choices:
        raise InvalidInputError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def query_time_range(request: Request, name: str = "created_at") -> dict[str, str | None]:
    """`created_at[gt|gte|lt|lte]` as canonical timestamps, keyed `gt`, `gte`, `lt`, `lte`."""
    bounds: dict[str, str | None] = {}
    for op in ("gt", "gte", "lt", "lte"):
        raw = request.query_params.get(f"{name}[{op}]")
        if raw is None or raw == "":
            bounds[op] = None
            continue
        try:
            bounds[op] = parse_ts(raw)
        except (ValueError, OverflowError):
            raise InvalidInputError(f"{name}[{op}]: not a timestamp: {raw!r}") from None
    return bounds
