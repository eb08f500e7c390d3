"""Checks on a log that comes from outside (`POST /v1/sessions/import`), before it is stored.

An imported log is a recording, but it is folded, replayed, forked and shown, so it must
hold together the way a log this server wrote does: every event has a unique id of the
server's alphabet; every span end closes one earlier start; every result, confirmation
and `requires_action` names an earlier event of the right kind. What the checks cannot
tell (that the events really happened) does not matter for safety: the engine decides
what may run from the pinned agent alone (runtime/engine/turns.py), never from the log, and the
store stamps each event with the import's own time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sessiond.runtime.wire import events as ev
from sessiond.store.errors import InvalidInputError

MAX_IMPORTED_EVENTS = 100_000
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _fail(index: int, message: str) -> InvalidInputError:
    return InvalidInputError(f"events[{index}]: {message}", code="invalid_imported_log")


def check_log(events: Sequence[ev.EventBase]) -> None:
    """Raise InvalidInputError (naming the first bad event) unless `events` hold together."""
    if len(events) > MAX_IMPORTED_EVENTS:
        raise InvalidInputError(
            f"events: at most {MAX_IMPORTED_EVENTS} events per import, got {len(events)}",
            code="too_many_events",
        )
    kinds: dict[str, type[ev.EventBase]] = {}
    ended_spans: set[str] = set()
    for index, event in enumerate(events):
        if not _ID.fullmatch(event.id):
            raise _fail(index, "`id` must be 1-128 characters of A-Z, a-z, 0-9, _ and -")
        if event.id in kinds:
            raise _fail(index, f"duplicate event id {event.id!r}")
        for ref, wanted in _references(event):
            if kinds.get(ref) not in wanted:
                names = " or ".join(str(w.__struct_config__.tag) for w in wanted)
                raise _fail(index, f"{ref!r} is not an earlier {names} of this log")
        if isinstance(event, ev.SpanModelRequestEnd | ev.SpanOutcomeEvaluationEnd):
            start = (
                event.model_request_start_id
                if isinstance(event, ev.SpanModelRequestEnd)
                else event.outcome_evaluation_start_id
            )
            if start in ended_spans:
                raise _fail(index, f"span {start!r} is ended twice")
            ended_spans.add(start)
        kinds[event.id] = type(event)


def _references(event: ev.EventBase) -> list[tuple[str, tuple[type[ev.EventBase], ...]]]:
    """The earlier events `event` names, and the kinds each must be."""
    tool_calls = (ev.AgentToolUse,)
    match event:
        case ev.AgentToolResult() | ev.UserToolResult():
            return [(event.tool_use_id, tool_calls)]
        case ev.UserToolConfirmation():
            return [(event.tool_use_id, (ev.AgentToolUse, ev.AgentMCPToolUse))]
        case ev.UserCustomToolResult():
            return [(event.custom_tool_use_id, (ev.AgentCustomToolUse,))]
        case ev.AgentMCPToolResult():
            return [(event.mcp_tool_use_id, (ev.AgentMCPToolUse,))]
        case ev.SpanModelRequestEnd():
            return [(event.model_request_start_id, (ev.SpanModelRequestStart,))]
        case ev.SpanOutcomeEvaluationEnd():
            return [(event.outcome_evaluation_start_id, (ev.SpanOutcomeEvaluationStart,))]
        case ev.SessionStatusIdle(stop_reason=ev.RequiresAction(event_ids=ids)):
            waiting = (ev.AgentToolUse, ev.AgentCustomToolUse, ev.AgentMCPToolUse)
            return [(i, waiting) for i in ids]
    return []
