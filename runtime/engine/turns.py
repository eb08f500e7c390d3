"""What the engine does next, decided by a pure fold over the session's log.

The engine keeps no state of its own between steps: after every append (and after a
crash) it re-reads the log and asks `plan` for the next step. That is what makes a crash
harmless: whatever was committed is the truth, and the plan carries on from it.

Rules, in order:
1. A tool call that may run and has no result yet: run it. Whether it may run is decided
   by the pinned agent's tools (`tools`), never by what the log says: a call of a tool the
   agent does not offer, or one its policy denies, is answered with an error result; one
   whose policy asks runs only after a `user.tool_confirmation` allow (a deny is answered
   with an error result too).
2. Tool calls still waiting on the client (asked-for confirmations, custom tools without
   a result, and on a self-hosted environment every toolset call its worker runs): go
   idle with `requires_action` listing them.
3. New input since the last completed model request (a user message, a system message,
   a client's tool result or confirmation), or the last model response asked for tools
   that now all have results: call the model, unless this turn has made
   `max_model_requests` already: then the turn ends with `retries_exhausted` (the
   contract's stop for a tool-use-round limit).
4. Otherwise, if the session is not idle yet: go idle with `end_turn`.

A `user.interrupt` consumes everything before it: input sent before an interrupt does not
start a new model request, and tool calls before it never run. A turn that died
(`session.status_idle` with `retries_exhausted` or `budget_reached`) consumes the same
way: the contract flushes queued input with it, and planning it again would only die
again. A model request whose start has no end (the process died during it) consumed
nothing: it is simply issued again.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from sessiond.runtime.resources.agent_tools import AgentTools
from sessiond.runtime.wire import events as ev

MAX_MODEL_REQUESTS_PER_TURN = 200
"""Model requests one turn may make before it is stopped (a model that keeps calling tools)."""

_DEAD_TURN = (ev.RetriesExhausted, ev.BudgetReached)


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
    """Go idle with `stop_reason`; `error` (when set) is logged first as a `session.error`."""

    stop_reason: str = "end_turn"
    """`end_turn`, or `retries_exhausted` when the turn hit its model-request limit."""
    error: str | None = None


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


def plan(
    events: Sequence[ev.EventBase],
    *,
    tools: AgentTools | None = None,
    max_model_requests: int = MAX_MODEL_REQUESTS_PER_TURN,
    remote: bool = False,
) -> Step:
    """The engine's next step for a session whose whole log is `events` (decoded).

    `tools` are the pinned agent's: the engine always passes them. Without them (tests of
    the log rules alone) the log's `evaluated_permission` is taken at its word. With
    `remote` (a self-hosted environment), the client's worker runs the toolset calls that
    may run: they wait for its `user.tool_result` like custom tools do.
    """
    status, idle = _status(events)
    if status == "terminated":
        return Nothing()
    ended_starts = {
        e.model_request_start_id for e in events if isinstance(e, ev.SpanModelRequestEnd)
    }
    consumed = -1  # index of the last event whose input is already dealt with
    last_interrupt = -1
    last_response: list[int] = []  # indexes of the tool calls of the last completed response
    requests_this_turn = 0
    calls: dict[str, tuple[int, ev.AgentToolUse | ev.AgentCustomToolUse]] = {}
    answered: set[str] = set()
    confirmations: dict[str, ev.UserToolConfirmation] = {}
    for index, event in enumerate(events):
        if isinstance(event, ev.SpanModelRequestStart):
            requests_this_turn += 1
            if event.id in ended_starts:
                consumed = index
                last_response = []
        elif isinstance(event, ev.UserInterrupt):
            consumed = last_interrupt = index
            last_response = []
        elif isinstance(event, ev.SessionStatusIdle):
            # A turn ended here: its last response asks for nothing more by itself.
            last_response = []
            requests_this_turn = 0
            if isinstance(event.stop_reason, _DEAD_TURN):
                consumed = last_interrupt = index
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
        policy = _policy(call, tools)
        if policy == "not_offered":
            denied.append((call, f"the agent does not offer the tool {call.name!r}"))
        elif policy == "deny":
            denied.append((call, "this tool is not allowed by the agent's permission policy"))
        elif confirmation is not None and confirmation.result == "deny":
            denied.append((call, confirmation.deny_message))
        elif (policy == "allow" or confirmation is not None) and not remote:
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
    new_input = any(isinstance(e, ev.INPUT_EVENTS) for e in events[consumed + 1 :])
    if new_input or last_response:
        if requests_this_turn >= max_model_requests:
            return EndTurn(
                stop_reason="retries_exhausted",
                error=f"the turn made {requests_this_turn} model requests, the limit per turn",
            )
        return CallModel()
    ever_had_input = any(isinstance(e, ev.INPUT_EVENTS) for e in events)
    if status != "idle" or (idle is None and ever_had_input):
        return EndTurn()
    return Nothing()


def _policy(call: ev.AgentToolUse, tools: AgentTools | None) -> str:
    """`allow`, `ask`, `deny` or `not_offered`: the pinned agent's word, and a deny in the
    log stands whatever the agent says now."""
    if call.evaluated_permission == "deny":
        return "deny"
    if tools is None:
        return "allow" if call.evaluated_permission in (None, "allow") else "ask"
    offered = tools.tools.get(call.name)
    if offered is None or offered.kind != "toolset":
        return "not_offered"
    return "allow" if offered.policy == "always_allow" else "ask"
