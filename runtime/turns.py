"""What the engine does next, decided by a pure fold over the session's log.

The engine keeps no state of its own between steps: after every append (and after a
crash) it re-reads the log and asks `plan` for the next step. That is what makes a crash
harmless: whatever was committed is the truth, and the plan carries on from it.

Rules, in order:
1. A tool call that may run (policy allow, or confirmed by `user.tool_confirmation` allow)
   and has no result yet: run it. One denied by the user: answer it with an error result.
2. Tool calls still waiting on the client (`always_ask` without a confirmation, custom
   tools without a result): go idle with `requires_action` listing them.
3. New input since the last completed model request (a user message, a system message,
   a client's tool result or confirmation), or the last model response asked for tools
   that now all have results: call the model.
4. Otherwise, if the session is not idle yet: go idle with `end_turn`.

A `user.interrupt` consumes everything before it: input sent before an interrupt does not
start a new model request. A model request whose start has no end (the process died
during it) consumed nothing: it is simply issued again.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sessiond.runtime import events as ev

_INPUT_TYPES = (
    ev.UserMessage,
    ev.SystemMessage,
    ev.UserCustomToolResult,
    ev.UserToolResult,
    ev.UserToolConfirmation,
    ev.UserDefineOutcome,
)


class RunTools(msgspec.Struct, frozen=True):
    """Run these agent-toolset calls (allowed or confirmed)."""

    calls: list[ev.AgentToolUse]


class DenyTools(msgspec.Struct, frozen=True):
    """Answer these calls with an error result: the user denied them."""

    calls: list[tuple[ev.AgentToolUse, str | None]]


class AwaitAction(msgspec.Struct, frozen=True):
    """Go idle with `requires_action` for these event ids (unless already idle so)."""

    event_ids: list[str]
    already_announced: bool


class CallModel(msgspec.Struct, frozen=True):
    """Issue a model request over the whole log."""


class EndTurn(msgspec.Struct, frozen=True):
    """Go idle with `end_turn`."""


class Nothing(msgspec.Struct, frozen=True):
    """The session is at rest."""


Step = RunTools | DenyTools | AwaitAction | CallModel | EndTurn | Nothing


def _status(events: Sequence[ev.EventBase]) -> tuple[str, ev.SessionStatusIdle | None]:
    status, idle = "idle", None
    for event in events:
        if isinstance(event, ev.SessionStatusRunning):
            status, idle = "running", None
        elif isinstance(event, ev.SessionStatusIdle):
            status, idle = "idle", event
        elif isinstance(event, ev.SessionStatusRescheduled):
            status, idle = "rescheduling", None
        elif isinstance(event, ev.SessionStatusTerminated):
            status, idle = "terminated", None
    return status, idle


def plan(events: Sequence[ev.EventBase]) -> Step:
    """The engine's next step for a session whose whole log is `events` (decoded)."""
    status, idle = _status(events)
    if status == "terminated":
        return Nothing()
    ended_starts = {
        e.model_request_start_id for e in events if isinstance(e, ev.SpanModelRequestEnd)
    }
    consumed = -1  # index of the last event whose input is already dealt with
    last_interrupt = -1
    last_response: list[int] = []  # indexes of the tool calls of the last completed response
    calls: dict[str, tuple[int, ev.AgentToolUse | ev.AgentCustomToolUse]] = {}
    answered: set[str] = set()
    confirmations: dict[str, ev.UserToolConfirmation] = {}
    for index, event in enumerate(events):
        if isinstance(event, ev.SpanModelRequestStart) and event.id in ended_starts:
            consumed = index
            last_response = []
        elif isinstance(event, ev.UserInterrupt):
            consumed = last_interrupt = index
            last_response = []
        elif isinstance(event, ev.AgentToolUse | ev.AgentCustomToolUse):
            calls[event.id] = (index, event)
            last_response.append(index)
        elif isinstance(event, ev.AgentToolResult | ev.UserToolResult):
            answered.add(event.tool_use_id)
        elif isinstance(event, ev.UserCustomToolResult):
            answered.add(event.custom_tool_use_id)
        elif isinstance(event, ev.UserToolConfirmation):
            confirmations[event.tool_use_id] = event

    runnable: list[ev.AgentToolUse] = []
    denied: list[tuple[ev.AgentToolUse, str | None]] = []
    waiting: list[str] = []
    for call_id, (index, call) in calls.items():
        if call_id in answered or index < last_interrupt:
            continue
        if isinstance(call, ev.AgentCustomToolUse):
            waiting.append(call_id)
            continue
        confirmation = confirmations.get(call_id)
        if call.evaluated_permission == "deny":
            denied.append((call, "this tool is not allowed by the agent's permission policy"))
        elif confirmation is not None and confirmation.result == "deny":
            denied.append((call, confirmation.deny_message))
        elif call.evaluated_permission in (None, "allow") or confirmation is not None:
            runnable.append(call)
        else:
            waiting.append(call_id)

    if denied:
        return DenyTools(calls=denied)
    if runnable:
        return RunTools(calls=runnable)
    if waiting:
        announced = (
            idle is not None
            and isinstance(idle.stop_reason, ev.RequiresAction)
            and sorted(idle.stop_reason.event_ids) == sorted(waiting)
        )
        return AwaitAction(event_ids=waiting, already_announced=announced)
    new_input = any(isinstance(e, _INPUT_TYPES) for e in events[consumed + 1 :])
    if new_input or last_response:
        return CallModel()
    ever_had_input = any(isinstance(e, _INPUT_TYPES) for e in events)
    if status != "idle" or (idle is None and ever_had_input):
        return EndTurn()
    return Nothing()
