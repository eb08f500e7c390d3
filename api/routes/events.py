"""`/v1/sessions/{id}/events`: list (cursor pages), send (validated), stream (SSE, resumable)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import principal, worker_may_send, workspace_id
from sessiond.api.bodies import decode_body, raw_json_response
from sessiond.api.pagination import encode_cursor, page_body, seq_cursor
from sessiond.api.query import query_choice, query_int, query_list, query_time_range
from sessiond.api.services import services
from sessiond.api.sse import event_source, tail
from sessiond.runtime.wire.encoding import to_wire
from sessiond.runtime.wire.events import EVENT_TYPES
from sessiond.runtime.wire.params import SendEvents
from sessiond.store.errors import InvalidInputError, NotFoundError
from sessiond.store.protocol import EventQuery

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def list_events(request: Request) -> Response:
    """Ascending by default; `types[]` and `created_at[...]` (on `processed_at`) filter."""
    ws = await workspace_id(request)
    session_id = request.path_params["session_id"]
    svc = services(request)
    await svc.sessions.get_record(ws, session_id)
    limit = query_int(request, "limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    descending = query_choice(request, "order", ("asc", "desc"), "asc") == "desc"
    types = query_list(request, "types")
    unknown = set(types) - EVENT_TYPES
    if unknown:
        raise InvalidInputError(f"types: unknown event type {sorted(unknown)[0]!r}")
    bounds = query_time_range(request)
    after_seq, before_seq = 0, None
    resume = seq_cursor(request)
    if resume is not None:
        if descending:
            before_seq = resume
        else:
            after_seq = resume
    query = EventQuery(
        after_seq=after_seq,
        before_seq=before_seq,
        types=frozenset(types) if types else None,
        recorded_gt=bounds["gt"],
        recorded_gte=bounds["gte"],
        recorded_lt=bounds["lt"],
        recorded_lte=bounds["lte"],
        descending=descending,
        limit=limit + 1,
    )
    stored = await svc.store.read(session_id, query)
    more = len(stored) > limit
    stored = stored[:limit]
    next_page = encode_cursor(stored[-1].seq) if more else None
    return raw_json_response(page_body([to_wire(s) for s in stored], next_page))


async def send_events(request: Request) -> Response:
    """Append client events (all or nothing) and echo them with ids and `processed_at`."""
    ws = await workspace_id(request)
    params = await decode_body(request, SendEvents)
    worker_may_send(await principal(request), [_event_type(raw) for raw in params.events])
    result = await services(request).sessions.send(ws, request.path_params["session_id"], params)
    return raw_json_response(b'{"data":[' + b",".join(to_wire(s) for s in result.events) + b"]}")


def _event_type(raw: msgspec.Raw) -> str:
    """An event's `type` before it is decoded (the send decodes and checks the rest)."""
    try:
        probe = msgspec.json.decode(raw, type=_TypeProbe)
    except msgspec.DecodeError:
        return ""
    except msgspec.ValidationError:
        return ""
    return probe.type


class _TypeProbe(msgspec.Struct):
    type: str = ""


async def _resume_seq(request: Request, session_id: str) -> int | None:
    """The seq to replay after: `Last-Event-ID` wins over `?after=`; None means live only."""
    event_id = request.headers.get("last-event-id") or request.query_params.get("after")
    if not event_id:
        return None
    try:
        stored = await services(request).store.get_event(event_id)
    except NotFoundError:
        stored = None
    if stored is None or stored.session_id != session_id:
        raise InvalidInputError(
            f"after: event {event_id!r} is not an event of this session", code="invalid_resume_id"
        )
    seq: int = stored.seq
    return seq


async def stream_events(request: Request) -> Response:
    """SSE: replay after the resume position if one is given, then the live tail."""
    ws = await workspace_id(request)
    session_id = request.path_params["session_id"]
    svc = services(request)
    await svc.sessions.get_record(ws, session_id)
    after_seq = await _resume_seq(request, session_id)
    if after_seq is None:
        # A live tail starts at the log's end as of *this request*, taken before the
        # response headers go out: a client that sends right after it sees the headers
        # must still get everything its send causes, however fast the turn runs.
        after_seq = await svc.store.last_seq(session_id)
    kinds = frozenset(query_list(request, "event_deltas"))
    unknown = kinds - {"agent.message", "agent.thinking"}
    if unknown:
        raise InvalidInputError(f"event_deltas: unknown type {sorted(unknown)[0]!r}")
    body = tail(
        svc.store,
        session_id,
        after_seq=after_seq,
        draining=request.app.state.draining,
        to_wire=to_wire,
        deltas=svc.deltas,
        delta_kinds=kinds,
    )
    return await event_source(request, body)


routes = [
    Route("/v1/sessions/{session_id}/events", list_events, methods=["GET"]),
    Route("/v1/sessions/{session_id}/events", send_events, methods=["POST"]),
    Route("/v1/sessions/{session_id}/events/stream", stream_events, methods=["GET"]),
]
