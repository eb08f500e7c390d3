"""`/v1/evals` (our extension): eval runs, their progress stream and reports; replays.

A run's progress is a stream like a session's: `GET /v1/evals/{id}/events/stream` replays
after `?after=` / `Last-Event-ID` and then goes live, ending after `eval.run_finished`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sessiond.api.auth import workspace_id
from sessiond.api.bodies import decode_body, json_response, raw_json_response
from sessiond.api.listing import record_page
from sessiond.api.pagination import encode_cursor, page_body, seq_cursor
from sessiond.api.query import query_int
from sessiond.api.services import services
from sessiond.api.sse import event_source, tail
from sessiond.evals.replay import replay_stored
from sessiond.evals.scorers import ScoreContext, decode_scorers
from sessiond.evals.service import KIND, EvalService, StartEval
from sessiond.runtime.wire.encoding import to_wire
from sessiond.store.errors import InvalidInputError, NotFoundError
from sessiond.store.protocol import EventQuery

_CLOSING = frozenset({"eval.run_finished"})


def _evals(request: Request) -> EvalService:
    return services(request).evals


async def start_eval(request: Request) -> Response:
    """Start a run: a suite (inline or from an earlier run) or recorded sessions."""
    ws = await workspace_id(request)
    params = await decode_body(request, StartEval)
    return json_response(await _evals(request).start(ws, params))


async def list_evals(request: Request) -> Response:
    """Newest first, without results."""
    ws = await workspace_id(request)
    return await record_page(request, kind=KIND, workspace_id=ws, fetch=_evals(request).list)


async def retrieve_eval(request: Request) -> Response:
    """A run with its results so far."""
    ws = await workspace_id(request)
    return json_response(await _evals(request).retrieve(ws, request.path_params["run_id"]))


async def cancel_eval(request: Request) -> Response:
    """Cancel: in-flight cases are interrupted and recorded as cancelled."""
    ws = await workspace_id(request)
    return json_response(await _evals(request).cancel(ws, request.path_params["run_id"]))


async def list_eval_events(request: Request) -> Response:
    """Progress events, ascending, in cursor pages."""
    ws = await workspace_id(request)
    run_id = request.path_params["run_id"]
    await _evals(request).retrieve(ws, run_id, results=False)
    limit = query_int(request, "limit", default=100, maximum=1000) or 100
    after_seq = seq_cursor(request) or 0
    store = services(request).store
    stored = await store.read(run_id, EventQuery(after_seq=after_seq, limit=limit + 1))
    more = len(stored) > limit
    stored = stored[:limit]
    next_page = encode_cursor(stored[-1].seq) if more else None
    return raw_json_response(page_body([to_wire(s) for s in stored], next_page))


async def stream_eval_events(request: Request) -> Response:
    """SSE progress: replay after the resume position (if any), then live."""
    ws = await workspace_id(request)
    run_id = request.path_params["run_id"]
    await _evals(request).retrieve(ws, run_id, results=False)
    svc = services(request)
    event_id = request.headers.get("last-event-id") or request.query_params.get("after")
    after_seq: int
    if event_id:
        try:
            stored = await svc.store.get_event(event_id)
        except NotFoundError:
            stored = None
        if stored is None or stored.session_id != run_id:
            raise InvalidInputError(
                f"after: event {event_id!r} is not an event of this run", code="invalid_resume_id"
            )
        after_seq = stored.seq
    elif request.query_params.get("from") == "live":
        after_seq = await svc.store.last_seq(run_id)
    else:
        after_seq = 0  # progress streams replay from the start unless asked otherwise
    body = tail(
        svc.store,
        run_id,
        after_seq=after_seq,
        draining=request.app.state.draining,
        to_wire=to_wire,
        closing_types=_CLOSING,
    )
    return await event_source(request, body)


async def eval_report(request: Request) -> Response:
    """Report of one run, or of several (`?runs=a,b`) compared; `?format=html` for a page."""
    from sessiond.evals.diff import diff_sessions
    from sessiond.evals.html import render_html
    from sessiond.evals.report import build_report, report_json

    ws = await workspace_id(request)
    evals = _evals(request)
    run_ids = [request.path_params["run_id"]]
    run_ids += [r for r in request.query_params.get("with", "").split(",") if r]
    results = []
    for run_id in run_ids:
        results.extend((await evals.retrieve(ws, run_id)).results or [])
    baseline = None
    if request.query_params.get("baseline"):
        agent, _, version = request.query_params["baseline"].rpartition(":")
        if not agent or not (version.isascii() and version.isdigit() and len(version) <= 10):
            raise InvalidInputError("baseline: expected AGENT_ID:VERSION")
        baseline = (agent, int(version))
    report = build_report(results, baseline=baseline, title=", ".join(run_ids))
    if request.query_params.get("format", "json") == "json":
        return raw_json_response(report_json(report))
    diffs = await _flip_diffs(request, report, diff_sessions)
    return HTMLResponse(render_html(report, diffs))


async def _flip_diffs(request: Request, report: Any, diff_sessions: Any) -> dict[str, Any]:
    """Event diffs of the first session pair of every case that flipped."""
    store = services(request).store
    diffs: dict[str, Any] = {}
    for comparison in getattr(report, "comparisons", []):
        for case in comparison.cases:
            if case.flip not in ("fixed", "broke") or case.case_id in diffs:
                continue
            left_ids, right_ids = case.sessions_a, case.sessions_b
            if not left_ids or not right_ids:
                continue
            logs = []
            for session_id in (left_ids[0], right_ids[0]):
                try:
                    stored = await store.read(session_id)
                except NotFoundError:
                    break
                logs.append([msgspec.json.decode(to_wire(s)) for s in stored])
            if len(logs) == 2:
                diffs[case.case_id] = diff_sessions(logs[0], logs[1])
    return diffs


class ReplayParams(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/sessions/{id}/replay` body."""

    scorers: list[dict[str, Any]] = []
    grader_model: str | None = None


async def replay_session(request: Request) -> Response:
    """Fold the session's log again (no model calls), check the projection, and score it."""
    ws = await workspace_id(request)
    params = await decode_body(request, ReplayParams)
    svc = services(request)
    allowed = request.app.state.config.python_scorer_modules
    scorers = decode_scorers(params.scorers, python_modules=allowed)
    context = ScoreContext(
        models=svc.models, grader_model=params.grader_model, python_modules=allowed
    )
    result = await replay_stored(svc.store, ws, request.path_params["session_id"], scorers, context)
    return json_response(result)


routes = [
    Route("/v1/evals", start_eval, methods=["POST"]),
    Route("/v1/evals", list_evals, methods=["GET"]),
    Route("/v1/evals/{run_id}", retrieve_eval, methods=["GET"]),
    Route("/v1/evals/{run_id}/cancel", cancel_eval, methods=["POST"]),
    Route("/v1/evals/{run_id}/events", list_eval_events, methods=["GET"]),
    Route("/v1/evals/{run_id}/events/stream", stream_eval_events, methods=["GET"]),
    Route("/v1/evals/{run_id}/report", eval_report, methods=["GET"]),
    Route("/v1/sessions/{session_id}/replay", replay_session, methods=["POST"]),
]
