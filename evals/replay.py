"""Replay: fold a recorded log again, with no model calls, and score it.

A session's record keeps the state folded as each append committed; folding the whole log
again from the state before its first event must give the same state, field for field.
Any difference is a *determinism error* (the fold read something other than the log, or
the log was changed under it) and is reported path by path, never smoothed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sessiond.evals.results import ScoreResult
from sessiond.evals.scorers import ScoreContext, ScorerSpec, score_all
from sessiond.evals.transcript import build_transcript
from sessiond.runtime.engine.fold import SessionState, fold_all
from sessiond.runtime.resources.records import owned_record
from sessiond.runtime.resources.sessions import KIND, session_doc
from sessiond.runtime.resources.transfer import InitialState, SessionExport
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.encoding import decode_event, decode_stored
from sessiond.store.protocol import Store

COMPARED = ("status", "stop_reason", "title", "metadata", "usage", "stats", "outcome_evaluations")
"""The projection's fields a replay must reproduce (the session object's view of them)."""

_decode_session = msgspec.json.Decoder(dict[str, Any]).decode


class ReplayResult(msgspec.Struct, kw_only=True):
    """What a replay found."""

    session_id: str | None
    events: int
    projection_matches: bool
    mismatches: list[str] = []
    """`path: recorded X, replayed Y`, one per differing leaf."""
    scores: list[ScoreResult] = []
    passed: bool = False
    """The projection matches and every scorer passed."""
    type: str = "replay_result"


def _diff(path: str, recorded: Any, replayed: Any, out: list[str]) -> None:
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in sorted(set(recorded) | set(replayed)):
            _diff(f"{path}.{key}", recorded.get(key), replayed.get(key), out)
    elif (
        isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(replayed)
    ):
        for index, (left, right) in enumerate(zip(recorded, replayed, strict=True)):
            _diff(f"{path}[{index}]", left, right, out)
    elif recorded != replayed:
        out.append(f"{path.lstrip('.')}: recorded {recorded!r}, replayed {replayed!r}")


def compare(recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """Differences between two projections (as builtins), on the `COMPARED` fields."""
    out: list[str] = []
    for name in COMPARED:
        if name in recorded:
            _diff(name, recorded[name], replayed.get(name), out)
    return out


async def _finish(
    session_id: str | None,
    events: Sequence[ev.EventBase],
    recorded: dict[str, Any],
    replayed: SessionState,
    model: str | None,
    scorers: Sequence[ScorerSpec],
    context: ScoreContext,
) -> ReplayResult:
    mismatches = compare(recorded, msgspec.to_builtins(replayed))
    transcript = build_transcript(events, model=model)
    scores = await score_all(scorers, transcript, context) if scorers else []
    matches = not mismatches
    return ReplayResult(
        session_id=session_id,
        events=len(events),
        projection_matches=matches,
        mismatches=mismatches,
        scores=scores,
        passed=matches and all(s.passed for s in scores),
    )


def _model_of(agent: Any) -> str | None:
    model = agent.get("model") if isinstance(agent, dict) else None
    if isinstance(model, dict):
        return str(model.get("id"))
    return str(model) if model else None


async def replay_stored(
    store: Store,
    workspace_id: str,
    session_id: str,
    scorers: Sequence[ScorerSpec] = (),
    context: ScoreContext | None = None,
) -> ReplayResult:
    """Replay a session in this store against the projection its record holds."""
    record = await owned_record(store, KIND, session_id, workspace_id)
    doc = session_doc(record)
    events = [decode_stored(s) for s in await store.read(session_id)]
    initial = doc.initial or SessionState(
        title=None, metadata={}, created_at=doc.created_at, updated_at=doc.created_at
    )
    replayed = fold_all(initial, events)
    recorded = msgspec.to_builtins(doc.state)
    agent = msgspec.json.decode(doc.agent)
    return await _finish(
        session_id, events, recorded, replayed, _model_of(agent), scorers, context or ScoreContext()
    )


async def replay_exported(
    exported: SessionExport,
    scorers: Sequence[ScorerSpec] = (),
    context: ScoreContext | None = None,
) -> ReplayResult:
    """Replay an exported log against the session object exported with it."""
    events = [decode_event(bytes(raw)) for raw in exported.events]
    initial = exported.initial or InitialState()
    replayed = fold_all(initial.state(), events)
    # The session object as served, compared field by field with the replayed state.
    recorded = _decode_session(exported.session)
    recorded.pop("stop_reason", None)  # not on the session object
    session_id = recorded.get("id")
    return await _finish(
        session_id if isinstance(session_id, str) else None,
        events,
        recorded,
        replayed,
        _model_of(recorded.get("agent")),
        scorers,
        context or ScoreContext(),
    )
