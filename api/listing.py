"""Forward-only keyset pages over records (agents, environments): one helper, one cursor shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sessiond.api.bodies import raw_json_response
from sessiond.api.pagination import encode_cursor, keyset_cursor, page_body
from sessiond.api.query import query_bool, query_int, query_time_range
from sessiond.store.protocol import RecordQuery

_encode = msgspec.json.Encoder().encode


async def record_page(
    request: Request,
    *,
    kind: str,
    workspace_id: str,
    fetch: Callable[[RecordQuery], Awaitable[Sequence[Any]]],
    descending: bool = True,
    max_limit: int = 100,
    tags: Mapping[str, frozenset[str]] | None = None,
) -> Response:
    """`limit`, `page`, `include_archived`, `created_at[...]`; newest first by default."""
    limit = query_int(request, "limit", default=20, maximum=max_limit) or 20
    after = keyset_cursor(request)
    bounds = query_time_range(request)
    query = RecordQuery(
        kind=kind,
        workspace_id=workspace_id,
        tags=tags or {},
        created_gt=bounds["gt"],
        created_gte=bounds["gte"],
        created_lt=bounds["lt"],
        created_lte=bounds["lte"],
        include_archived=query_bool(request, "include_archived"),
        descending=descending,
        after=after,
        limit=limit + 1,
    )
    items = list(await fetch(query))
    more = len(items) > limit
    items = items[:limit]
    next_page = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    return raw_json_response(page_body([_encode(i) for i in items], next_page))
