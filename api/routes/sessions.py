"""`/v1/sessions`: create, retrieve, list (bidirectional cursor), update, archive, delete."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import workspace_id
from sessiond.api.bodies import decode_body, json_response, raw_json_response
from sessiond.api.pagination import directed_cursor, encode_cursor, page_body
from sessiond.api.query import query_bool, query_choice, query_int, query_list, query_time_range
from sessiond.api.services import services
from sessiond.runtime.resources.sessions import (
    CreateSession,
    ForkSession,
    ImportSession,
    UpdateSession,
    session_doc,
    to_session,
)
from sessiond.runtime.resources.transfer import session_export
from sessiond.store.errors import InvalidInputError
from sessiond.store.protocol import RecordQuery

_STATUSES = frozenset({"rescheduling", "running", "idle", "terminated"})
_encode = msgspec.json.Encoder().encode


def _sessions(request: Request):  # type: ignore[no-untyped-def]
    return services(request).sessions


async def create_session(request: Request) -> Response:
    """Create a session pinned to an agent version."""
    ws = await workspace_id(request)
    params = await decode_body(request, CreateSession)
    return json_response(await _sessions(request).create(ws, params))


async def retrieve_session(request: Request) -> Response:
    """One session."""
    ws = await workspace_id(request)
    return json_response(await _sessions(request).retrieve(ws, request.path_params["session_id"]))


async def update_session(request: Request) -> Response:
    """Title / metadata patch; emits `session.updated`."""
    ws = await workspace_id(request)
    params = await decode_body(request, UpdateSession)
    session_id = request.path_params["session_id"]
    return json_response(await _sessions(request).update(ws, session_id, params))


async def fork_session(request: Request) -> Response:
    """Our extension: a new session starting with a copy of this one's log up to an event."""
    ws = await workspace_id(request)
    params = await decode_body(request, ForkSession)
    session_id = request.path_params["session_id"]
    return json_response(await _sessions(request).fork(ws, session_id, params))


async def export_session(request: Request) -> Response:
    """Our extension: the session as a `SessionExport` (runtime/resources/transfer.py), which
    `POST /v1/sessions/import` takes and `sessiond eval replay FILE` replays."""
    ws = await workspace_id(request)
    session_id = request.path_params["session_id"]
    svc = services(request)
    record = await svc.sessions.get_record(ws, session_id)
    doc = session_doc(record)
    stored = await svc.store.read(session_id)
    session = _encode(to_session(record))
    return json_response(session_export(session, doc.initial, doc.created_at, stored))


async def import_session(request: Request) -> Response:
    """Our extension: store a `SessionExport` as a new, resting session."""
    ws = await workspace_id(request)
    params = await decode_body(request, ImportSession)
    return json_response(await _sessions(request).import_log(ws, params))


async def archive_session(request: Request) -> Response:
    """Archive (hidden from list unless `include_archived`)."""
    ws = await workspace_id(request)
    return json_response(await _sessions(request).archive(ws, request.path_params["session_id"]))


async def delete_session(request: Request) -> Response:
    """Delete a session and its log."""
    ws = await workspace_id(request)
    return json_response(await _sessions(request).delete(ws, request.path_params["session_id"]))


async def list_sessions(request: Request) -> Response:
    """Newest first by default; `next_page` goes on in `order`, `prev_page` comes back."""
    ws = await workspace_id(request)
    limit = query_int(request, "limit", default=20, maximum=1000) or 20
    order = query_choice(request, "order", ("asc", "desc"), "desc")
    tags: dict[str, frozenset[str]] = {}
    statuses = query_list(request, "statuses")
    if statuses:
        unknown = set(statuses) - _STATUSES
        if unknown:
            raise InvalidInputError(f"statuses: unknown status {sorted(unknown)[0]!r}")
        tags["status"] = frozenset(statuses)
    agent_id = request.query_params.get("agent_id")
    if agent_id:
        tags["agent_id"] = frozenset([agent_id])
    agent_version = query_int(request, "agent_version", default=None)
    if agent_version is not None:
        if not agent_id:
            raise InvalidInputError("agent_version: only valid together with agent_id")
        tags["agent_version"] = frozenset([str(agent_version)])
    for absent in ("deployment_id", "memory_store_id"):
        value = request.query_params.get(absent)
        if value:
            # Sessions are never created from deployments or with memory stores yet.
            tags[absent] = frozenset([value])
    bounds = query_time_range(request)
    descending = order == "desc"
    after: tuple[str, str] | None = None
    backwards = False
    resume = directed_cursor(request)
    if resume is not None:
        after, backwards = (resume[0], resume[1]), resume[2]
    query = RecordQuery(
        kind="session",
        workspace_id=ws,
        tags=tags,
        created_gt=bounds["gt"],
        created_gte=bounds["gte"],
        created_lt=bounds["lt"],
        created_lte=bounds["lte"],
        include_archived=query_bool(request, "include_archived"),
        descending=descending != backwards,
        after=after,
        limit=limit + 1,
    )
    sessions = await _sessions(request).list(query)
    more = len(sessions) > limit
    sessions = sessions[:limit]
    if backwards:
        sessions.reverse()
    next_page = prev_page = None
    if sessions:
        first, last = sessions[0], sessions[-1]
        if more or backwards:
            next_page = encode_cursor(last.created_at, last.id, "next")
        if resume is not None and (not backwards or more):
            prev_page = encode_cursor(first.created_at, first.id, "prev")
    body = page_body([_encode(s) for s in sessions], next_page, prev_page, bidirectional=True)
    return raw_json_response(body)


routes = [
    Route("/v1/sessions", create_session, methods=["POST"]),
    Route("/v1/sessions", list_sessions, methods=["GET"]),
    Route("/v1/sessions/import", import_session, methods=["POST"]),
    Route("/v1/sessions/{session_id}", retrieve_session, methods=["GET"]),
    Route("/v1/sessions/{session_id}", update_session, methods=["POST"]),
    Route("/v1/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/v1/sessions/{session_id}/archive", archive_session, methods=["POST"]),
    Route("/v1/sessions/{session_id}/fork", fork_session, methods=["POST"]),
    Route("/v1/sessions/{session_id}/export", export_session, methods=["GET"]),
]
