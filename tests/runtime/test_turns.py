"""The engine's next-step planner over hand-built logs, including crash and interrupt points."""

from __future__ import annotations

from typing import Any

from sessiond.runtime.engine.turns import (
    AwaitAction,
    CallModel,
    DenyTools,
    EndTurn,
    Nothing,
    RunTools,
    plan,
)
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import TextBlock
from sessiond.runtime.wire.usage import SpanModelUsage

_counter = iter(range(1, 10_000))


def _id() -> str:
    return f"sevt_{next(_counter):04d}"


def user(text: str = "hi") -> ev.UserMessage:
    return ev.UserMessage(id=_id(), content=[TextBlock(text=text)])


def running() -> ev.SessionStatusRunning:
    return ev.SessionStatusRunning(id=_id())


def idle(reason: Any = None) -> ev.SessionStatusIdle:
    return ev.SessionStatusIdle(id=_id(), stop_reason=reason or ev.EndTurn())


def start() -> ev.SpanModelRequestStart:
    return ev.SpanModelRequestStart(id=_id())


def end(of: ev.SpanModelRequestStart) -> ev.SpanModelRequestEnd:
    usage = SpanModelUsage(
        input_tokens=1, output_tokens=1, cache_creation_input_tokens=0, cache_read_input_tokens=0
    )
    return ev.SpanModelRequestEnd(id=_id(), model_request_start_id=of.id, model_usage=usage)


def reply(text: str = "ok") -> ev.AgentMessage:
    return ev.AgentMessage(id=_id(), content=[TextBlock(text=text)])


def tool_use(permission: Any = "allow") -> ev.AgentToolUse:
    return ev.AgentToolUse(
        id=_id(), name="bash", input={"command": "true"}, evaluated_permission=permission
    )


def test_fresh_session_rests() -> None:
    assert plan([]) == Nothing()


def test_user_message_calls_the_model_then_the_turn_ends() -> None:
    log: list[Any] = [user()]
    assert plan(log) == CallModel()
    s = start()
    log += [running(), s, reply(), end(s)]
    assert plan(log) == EndTurn()
    log.append(idle())
    assert plan(log) == Nothing()


def test_message_sent_during_a_turn_is_taken_up_by_the_next_request() -> None:
    s = start()
    log: list[Any] = [user("first"), running(), s, user("second"), reply(), end(s)]
    assert plan(log) == CallModel()


def test_a_request_that_died_mid_flight_is_issued_again() -> None:
    log: list[Any] = [user(), running(), start()]
    assert plan(log) == CallModel()


def test_allowed_tool_runs_then_the_model_continues() -> None:
    s = start()
    call = tool_use("allow")
    log: list[Any] = [user(), running(), s, call, end(s)]
    assert plan(log) == RunTools(calls=[call])
    log.append(ev.AgentToolResult(id=_id(), tool_use_id=call.id))
    assert plan(log) == CallModel()


def test_ask_waits_for_confirmation_then_runs_or_is_denied() -> None:
    s = start()
    call = tool_use("ask")
    log: list[Any] = [user(), running(), s, call, end(s)]
    assert plan(log) == AwaitAction(event_ids=[call.id], already_announced=False)
    log.append(idle(ev.RequiresAction(event_ids=[call.id])))
    assert plan(log) == AwaitAction(event_ids=[call.id], already_announced=True)
    allowed = [*log, ev.UserToolConfirmation(id=_id(), tool_use_id=call.id, result="allow")]
    assert plan(allowed) == RunTools(calls=[call])
    denied = [
        *log,
        ev.UserToolConfirmation(id=_id(), tool_use_id=call.id, result="deny", deny_message="no"),
    ]
    assert plan(denied) == DenyTools(calls=[(call, "no")])


def test_custom_tool_waits_for_its_result() -> None:
    s = start()
    call = ev.AgentCustomToolUse(id=_id(), name="lookup", input={})
    log: list[Any] = [user(), running(), s, call, end(s)]
    assert plan(log) == AwaitAction(event_ids=[call.id], already_announced=False)
    log += [
        idle(ev.RequiresAction(event_ids=[call.id])),
        ev.UserCustomToolResult(id=_id(), custom_tool_use_id=call.id),
    ]
    assert plan(log) == CallModel()


def test_interrupt_consumes_pending_input_and_tool_calls() -> None:
    s = start()
    call = tool_use("ask")
    log: list[Any] = [user(), running(), s, call, end(s), user("more"), ev.UserInterrupt(id=_id())]
    assert plan(log) == EndTurn()
    log.append(idle())
    assert plan(log) == Nothing()


def test_terminated_sessions_do_nothing() -> None:
    assert plan([user(), ev.SessionStatusTerminated(id=_id())]) == Nothing()
