"""The model context for the next request: a pure fold over the session's log.

Every prior turn goes in: user and system messages, the agent's replies, its tool calls
(keyed by their event ids, which are valid tool-use ids for every provider) and their
results. Two repairs keep the context valid for providers that insist on pairing:
a tool call left without a result (interrupted, or the process died while it ran) gets
a synthetic error result, and consecutive turns of one role are merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sessiond.runtime.providers import base as pb
from sessiond.runtime.resources.agent_tools import AgentTools
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import TextBlock

DEFAULT_MAX_TOKENS = 8192
_MISSING_RESULT = "(no result: the tool call was interrupted)"


def _text_of(blocks: Sequence[Any] | None) -> list[pb.TextBlock]:
    out: list[pb.TextBlock] = []
    for block in blocks or ():
        if isinstance(block, TextBlock):
            out.append(pb.TextBlock(text=block.text))
        else:
            kind = getattr(block, "type", type(block).__name__)
            out.append(pb.TextBlock(text=f"[{kind} content omitted]"))
    return out


def _append(messages: list[pb.Message], role: str, blocks: list[Any]) -> None:
    """Add blocks as a turn of `role`, merging into the previous turn of the same role."""
    if not blocks:
        return
    if messages and messages[-1].role == role:
        messages[-1] = pb.Message(role=role, content=[*messages[-1].content, *blocks])
    else:
        messages.append(pb.Message(role=role, content=blocks))  # type: ignore[arg-type]


def build_messages(events: Sequence[ev.EventBase]) -> list[pb.Message]:
    """The conversation so far, in provider-neutral form.

    Tool results must directly follow the calls they answer, so text a user sends while
    calls are open is held back and placed after the results. Text sent while a model
    request is open was not part of it: it goes after that request's response.
    """
    messages: list[pb.Message] = []
    open_calls: list[str] = []
    results: list[pb.ToolResultBlock] = []
    held: list[pb.TextBlock] = []
    during_request: list[pb.TextBlock] = []
    request_open = False

    def flush(*, abandon: bool) -> None:
        if abandon:
            results.extend(
                pb.ToolResultBlock(
                    tool_use_id=call_id, content=[pb.TextBlock(text=_MISSING_RESULT)], is_error=True
                )
                for call_id in open_calls
            )
            open_calls.clear()
        if open_calls:
            return
        _append(messages, "user", [*results, *held])
        results.clear()
        held.clear()

    def user_text(blocks: list[pb.TextBlock]) -> None:
        if request_open:
            during_request.extend(blocks)
            return
        held.extend(blocks)
        flush(abandon=False)

    def request_ended() -> None:
        nonlocal request_open
        request_open = False
        if during_request:
            user_text(list(during_request))
            during_request.clear()

    for event in events:
        if isinstance(event, ev.SpanModelRequestStart):
            request_ended()  # one left open (the process died in it) ends here
            request_open = True
        elif isinstance(event, ev.SpanModelRequestEnd):
            request_ended()
        elif isinstance(event, ev.UserMessage):
            user_text(_text_of(event.content))
        elif isinstance(event, ev.SystemMessage):
            user_text([pb.TextBlock(text=f"[system] {b.text}") for b in _text_of(event.content)])
        elif isinstance(event, ev.AgentMessage):
            flush(abandon=True)
            _append(messages, "assistant", _text_of(event.content))
        elif isinstance(event, ev.AgentToolUse | ev.AgentCustomToolUse):
            if not open_calls:
                flush(abandon=True)
            block = pb.ToolUseBlock(id=event.id, name=event.name, input=dict(event.input))
            _append(messages, "assistant", [block])
            open_calls.append(event.id)
        elif isinstance(event, ev.AgentToolResult | ev.UserToolResult | ev.UserCustomToolResult):
            call_id = (
                event.custom_tool_use_id
                if isinstance(event, ev.UserCustomToolResult)
                else event.tool_use_id
            )
            if call_id not in open_calls:
                continue
            open_calls.remove(call_id)
            content = _text_of(event.content) or [pb.TextBlock(text="(no output)")]
            results.append(
                pb.ToolResultBlock(
                    tool_use_id=call_id, content=content, is_error=bool(event.is_error)
                )
            )
            flush(abandon=False)
        elif isinstance(event, ev.UserInterrupt):
            flush(abandon=True)
    request_ended()
    flush(abandon=True)
    return messages


def build_request(
    tools: AgentTools, events: Sequence[ev.EventBase], *, max_tokens: int = DEFAULT_MAX_TOKENS
) -> pb.ModelRequest:
    """The next model request for an agent snapshot and a log."""
    specs = [
        pb.ToolSpec(name=t.name, description=t.description, input_schema=t.input_schema)
        for t in tools.tools.values()
    ]
    return pb.ModelRequest(
        model=tools.model,
        system=tools.system,
        messages=build_messages(events),
        tools=specs,
        max_tokens=max_tokens,
    )
