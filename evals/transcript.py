"""What scorers look at: one session's log, reduced to the facts a verdict needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import TextBlock

_CALLS = (ev.AgentToolUse, ev.AgentCustomToolUse, ev.AgentMCPToolUse)


class ToolCall(msgspec.Struct, frozen=True):
    """A tool call the agent made."""

    name: str
    input: dict[str, Any]


class Transcript(msgspec.Struct, frozen=True, kw_only=True):
    """A session's log and what was derived from it (pure: same log, same transcript)."""

    events: list[ev.EventBase]
    final_text: str
    """Text of the last `agent.message` ("" when the agent said nothing)."""
    messages: list[str]
    """Every `agent.message` text, in order."""
    user_messages: list[str]
    tool_calls: list[ToolCall]
    turns: int
    """Model requests made (`span.model_request_start` events)."""
    input_tokens: int
    output_tokens: int
    latency_s: float
    """From the first user event to the last `session.status_idle` (0.0 if either is absent)."""
    stop_reason: str | None
    model: str | None


def _text(blocks: Sequence[Any] | None) -> str:
    return "".join(b.text for b in blocks or () if isinstance(b, TextBlock))


def _tag(value: object) -> str:
    return str(type(value).__struct_config__.tag)  # type: ignore[attr-defined]


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return max(0.0, delta.total_seconds())


def build_transcript(events: Sequence[ev.EventBase], *, model: str | None = None) -> Transcript:
    """Reduce a decoded log to a `Transcript`."""
    messages: list[str] = []
    user_messages: list[str] = []
    calls: list[ToolCall] = []
    turns = input_tokens = output_tokens = 0
    first_user: str | None = None
    last_idle: ev.SessionStatusIdle | None = None
    for event in events:
        if isinstance(event, ev.AgentMessage):
            messages.append(_text(event.content))
        elif isinstance(event, ev.UserMessage):
            user_messages.append(_text(event.content))
        elif isinstance(event, _CALLS):
            calls.append(ToolCall(name=event.name, input=dict(event.input)))
        elif isinstance(event, ev.SpanModelRequestStart):
            turns += 1
        elif isinstance(event, ev.SpanModelRequestEnd):
            input_tokens += event.model_usage.input_tokens
            output_tokens += event.model_usage.output_tokens
        elif isinstance(event, ev.SessionStatusIdle):
            last_idle = event
        if first_user is None and event.type.startswith("user."):
            first_user = event.processed_at
    return Transcript(
        events=list(events),
        final_text=messages[-1] if messages else "",
        messages=messages,
        user_messages=user_messages,
        tool_calls=calls,
        turns=turns,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_s=_seconds(first_user, last_idle.processed_at if last_idle else None),
        stop_reason=_tag(last_idle.stop_reason) if last_idle else None,
        model=model,
    )
