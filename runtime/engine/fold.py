"""The session projection: `state = fold(state, event)`, a pure function of the log.

No clock reads and no randomness: every time comes from the events' `processed_at`, so
folding a log twice, or in pieces, gives the same state (the tests check both).

Decisions where the contract leaves room:

1. **Status** starts `idle` and follows only the session-level `session.status_*` events
   (thread status events leave it alone). `terminated` is final: later status events
   are ignored. `stop_reason` is the last `session.status_idle`'s and is kept while running.
2. **Usage** is summed from `span.model_request_end.model_usage` and from
   `span.outcome_evaluation_end.usage` (grader requests are reported only there, never as
   model-request spans). The spans do not split cache writes by lifetime, so
   `cache_creation_input_tokens` count as `ephemeral_5m_input_tokens` (the default TTL).
   A `session.usage` snapshot is authoritative for everything before it in the log: each
   field it carries replaces ours, fields it leaves out are kept, later spans add on top
   (except `active_seconds`, which is always ours, see 3).
3. **Time**: `active_seconds` is the time spent with status `running` (closed intervals
   plus the open one up to the last event), which is also `usage.active_seconds`; we run
   one thread per session, so the SDK's per-thread sum and its overlap-once figure agree.
   `duration_seconds` runs from `created_at` (the creator sets it; otherwise the first
   event's time) to the last event. Both stop at the last event: a reader that wants them
   "as of now" extends them itself. Times are summed in integer microseconds, so the
   result does not depend on how the log was split.
4. **Unanswered input** (`input_pending`): set by client input (a message, a tool result
   or confirmation, an outcome); cleared by what shows the engine took it up: a model
   request's start, a `session.status_idle`, an interrupt, termination. The engine plans
   each of those from a log that already held the input (their appends are guarded by
   the seq they were planned from), so a session idle with input pending has input no
   step ever saw. The projection marks it due (`Record.due`), and recovery drives it.
5. **Outcome evaluations**: one entry per `user.define_outcome`; `pending` until the session
   next runs, then `running`, `evaluating` during a grading span, and afterwards the
   grader's latest verdict (`completed_at` set once it is terminal).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.usage import CacheCreationUsage, SessionUsageSnapshot, SpanModelUsage

SessionStatus = Literal["idle", "running", "rescheduling", "terminated"]

TERMINAL_RESULTS = frozenset({"satisfied", "max_iterations_reached", "failed", "interrupted"})
"""Verdicts after which an outcome is evaluated no more."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class SessionStats(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Timing statistics of a session (the Session object's `stats`)."""

    active_seconds: float | None = None
    """Time spent with status `running`."""
    duration_seconds: float | None = None
    """Time from creation to the last event."""


class OutcomeEvaluation(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="outcome_evaluation"
):
    """Where one defined outcome stands (an entry of the Session's `outcome_evaluations`)."""

    outcome_id: str
    description: str
    iteration: int = 0
    """0-based revision cycle the outcome is on."""
    result: str = "pending"
    """`pending`, `running`, `evaluating`, or the grader's latest verdict."""
    explanation: str | None = None
    """The grader's explanation of its latest verdict."""
    completed_at: str | None = None
    """When the outcome reached a terminal verdict."""


_ZERO_USAGE = SessionUsageSnapshot(
    active_seconds=0.0,
    cache_creation=CacheCreationUsage(ephemeral_1h_input_tokens=0, ephemeral_5m_input_tokens=0),
    cache_read_input_tokens=0,
    input_tokens=0,
    output_tokens=0,
)


class SessionState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything about a session that its log determines."""

    status: SessionStatus = "idle"
    stop_reason: ev.StopReason | None = None
    """The stop reason of the last `session.status_idle`."""
    title: str | None = None
    metadata: dict[str, str] = {}
    usage: SessionUsageSnapshot = _ZERO_USAGE
    stats: SessionStats = SessionStats(active_seconds=0.0, duration_seconds=0.0)
    outcome_evaluations: list[OutcomeEvaluation] = []
    created_at: str | None = None
    """Start of `duration_seconds`; None until set by the creator or by the first event."""
    updated_at: str | None = None
    """`processed_at` of the last event folded (or the creation time)."""
    last_seq: int = 0
    """How many events were folded: the seq of the last one, as seqs run from 1."""
    last_event_id: str | None = None
    running_since: str | None = None
    """When the current `running` spell began; None unless running."""
    active_us: int = 0
    """Microseconds spent running in spells that have ended."""
    input_pending: bool = False
    """Client input arrived that no engine step has taken up yet (see 4. above)."""
    list_cost_micro_usd: int = 0
    """The exact list cost so far (millionths of a dollar): `usage.list_cost` is rounded
    up to cents, and a budget compares against this."""
    open_tool_calls: list[str] = []
    """Ids of the tool calls (`agent.tool_use`, `agent.custom_tool_use`) still awaiting a
    result; an interrupt or a dead turn drops them. A client's result for anything else is
    refused, so no call is ever answered twice (two self-hosted workers, a retried post)."""


def fold(state: SessionState, event: ev.SessionEvent) -> SessionState:
    """The state after `event`."""
    at = event.processed_at
    state = msgspec.structs.replace(
        state,
        last_seq=state.last_seq + 1,
        last_event_id=event.id or state.last_event_id,
        updated_at=at or state.updated_at,
        created_at=state.created_at or at,
    )
    return _with_stats(_apply(state, event, at))


def fold_all(state: SessionState, events: Iterable[ev.SessionEvent]) -> SessionState:
    """The state after each of `events` in order."""
    for event in events:
        state = fold(state, event)
    return state


# -- private helpers ----------------------------------------------------------------------


_TAKES_UP_INPUT = (
    ev.SpanModelRequestStart,
    ev.SessionStatusIdle,
    ev.UserInterrupt,
    ev.SessionStatusTerminated,
)


def _open_calls(state: SessionState, event: ev.SessionEvent) -> list[str] | None:
    """The open tool calls after `event`, or None when it leaves them as they are."""
    if isinstance(event, ev.AgentToolUse | ev.AgentCustomToolUse):
        return [*state.open_tool_calls, event.id]
    answered: str | None = None
    if isinstance(event, ev.AgentToolResult | ev.UserToolResult):
        answered = event.tool_use_id
    elif isinstance(event, ev.UserCustomToolResult):
        answered = event.custom_tool_use_id
    if answered is not None and answered in state.open_tool_calls:
        return [c for c in state.open_tool_calls if c != answered]
    dead_turn = isinstance(event, ev.SessionStatusIdle) and isinstance(
        event.stop_reason, ev.RetriesExhausted | ev.BudgetReached
    )
    if (isinstance(event, ev.UserInterrupt) or dead_turn) and state.open_tool_calls:
        return []
    return None


def awaits_result(state: SessionState, event: ev.SessionEvent) -> str | None:
    """For a client's tool result: None when `state` awaits it, else why it is refused."""
    if isinstance(event, ev.UserToolResult):
        call_id = event.tool_use_id
    elif isinstance(event, ev.UserCustomToolResult):
        call_id = event.custom_tool_use_id
    else:
        return None
    if call_id in state.open_tool_calls:
        return None
    return (
        f"no tool call awaits this result: {call_id!r} is not a call of this session, or it "
        "was already answered or interrupted"
    )


def _apply(state: SessionState, event: ev.SessionEvent, at: str | None) -> SessionState:
    replace = msgspec.structs.replace
    calls = _open_calls(state, event)
    if calls is not None:
        state = replace(state, open_tool_calls=calls)
    if isinstance(event, ev.INPUT_EVENTS):
        state = replace(state, input_pending=True)
    elif isinstance(event, _TAKES_UP_INPUT) and state.input_pending:
        state = replace(state, input_pending=False)
    match event:
        case ev.SessionStatusRunning() if state.status != "terminated":
            outcomes = [
                replace(o, result="running") if o.result == "pending" else o
                for o in state.outcome_evaluations
            ]
            return replace(
                state,
                status="running",
                running_since=state.running_since or at,
                outcome_evaluations=outcomes,
            )
        case ev.SessionStatusIdle(stop_reason=stop_reason) if state.status != "terminated":
            return replace(_stop_running(state, at), status="idle", stop_reason=stop_reason)
        case ev.SessionStatusRescheduled() if state.status != "terminated":
            return replace(_stop_running(state, at), status="rescheduling")
        case ev.SessionStatusTerminated():
            return replace(_stop_running(state, at), status="terminated")
        case ev.SessionUpdated(title=title, metadata=metadata):
            if not isinstance(title, msgspec.UnsetType):
                state = replace(state, title=title)
            if not isinstance(metadata, msgspec.UnsetType):
                state = replace(state, metadata=dict(metadata))
            return state
        case ev.SessionUsage(usage=snapshot):
            carried = {
                name: value
                for name in snapshot.__struct_fields__
                if (value := getattr(snapshot, name)) is not None
            }
            if event.list_cost_micro_usd is not None:
                state = replace(state, list_cost_micro_usd=event.list_cost_micro_usd)
            return replace(state, usage=replace(state.usage, **carried))
        case ev.SpanModelRequestEnd(model_usage=usage):
            return replace(state, usage=_add_usage(state.usage, usage))
        case ev.UserDefineOutcome():
            added = OutcomeEvaluation(outcome_id=event.outcome_id, description=event.description)
            return replace(state, outcome_evaluations=[*state.outcome_evaluations, added])
        case ev.SpanOutcomeEvaluationStart() | ev.SpanOutcomeEvaluationOngoing():
            return _update_outcome(
                state, event.outcome_id, result="evaluating", iteration=event.iteration
            )
        case ev.SpanOutcomeEvaluationEnd():
            state = replace(state, usage=_add_usage(state.usage, event.usage))
            return _update_outcome(
                state,
                event.outcome_id,
                result=event.result,
                iteration=event.iteration,
                explanation=event.explanation,
                completed_at=at if event.result in TERMINAL_RESULTS else None,
            )
        case _:
            return state


def _stop_running(state: SessionState, at: str | None) -> SessionState:
    """Close the current running spell (if any) at `at`."""
    if state.running_since is None:
        return state
    spell = _micros_between(state.running_since, at) if at is not None else 0
    return msgspec.structs.replace(state, running_since=None, active_us=state.active_us + spell)


def _with_stats(state: SessionState) -> SessionState:
    """Recompute the derived timings for the state as of its last event."""
    active_us = state.active_us
    if state.running_since is not None and state.updated_at is not None:
        active_us += _micros_between(state.running_since, state.updated_at)
    duration_us = 0
    if state.created_at is not None and state.updated_at is not None:
        duration_us = _micros_between(state.created_at, state.updated_at)
    active_s = active_us / 1_000_000
    return msgspec.structs.replace(
        state,
        stats=SessionStats(active_seconds=active_s, duration_seconds=duration_us / 1_000_000),
        usage=msgspec.structs.replace(state.usage, active_seconds=active_s),
    )


def _add_usage(total: SessionUsageSnapshot, add: SpanModelUsage) -> SessionUsageSnapshot:
    cache = total.cache_creation or CacheCreationUsage()
    return msgspec.structs.replace(
        total,
        input_tokens=(total.input_tokens or 0) + add.input_tokens,
        output_tokens=(total.output_tokens or 0) + add.output_tokens,
        cache_read_input_tokens=(total.cache_read_input_tokens or 0) + add.cache_read_input_tokens,
        cache_creation=CacheCreationUsage(
            ephemeral_1h_input_tokens=cache.ephemeral_1h_input_tokens or 0,
            ephemeral_5m_input_tokens=(cache.ephemeral_5m_input_tokens or 0)
            + add.cache_creation_input_tokens,
        ),
    )


def _update_outcome(
    state: SessionState,
    outcome_id: str,
    *,
    result: str,
    iteration: int,
    explanation: str | None = None,
    completed_at: str | None = None,
) -> SessionState:
    """Set one outcome's progress; spans about an outcome never defined are ignored."""
    outcomes = [
        msgspec.structs.replace(
            o,
            result=result,
            iteration=iteration,
            explanation=explanation if explanation is not None else o.explanation,
            completed_at=completed_at,
        )
        if o.outcome_id == outcome_id
        else o
        for o in state.outcome_evaluations
    ]
    return msgspec.structs.replace(state, outcome_evaluations=outcomes)


def _micros_between(start: str, end: str) -> int:
    """Microseconds from `start` to `end` (RFC 3339), never negative: a clock step
    backwards must not take time off a total."""
    return max(0, _micros(end) - _micros(start))


def _micros(timestamp: str) -> int:
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND
