"""The model-context fold: pure, total over valid logs, and always well paired for providers."""

from __future__ import annotations

from event_strategies import stored_logs
from hypothesis import given

from sessiond.runtime.engine.context import build_messages, build_request
from sessiond.runtime.providers import base as pb
from sessiond.runtime.resources.agent_tools import agent_tools

_AGENT = (
    b'{"id":"agent_1","model":{"id":"claude-x"},"system":"sys",'
    b'"tools":[{"type":"agent_toolset_20260401","default_config":{"enabled":true,'
    b'"permission_policy":{"type":"always_allow"}},"configs":[]}]}'
)


@given(stored_logs())
def test_any_valid_log_folds_and_folding_twice_is_equal(log: list) -> None:  # type: ignore[type-arg]
    first = build_request(agent_tools(_AGENT), log)
    second = build_request(agent_tools(_AGENT), list(log))
    assert first == second
    assert first.system == "sys" and {t.name for t in first.tools} >= {"bash", "read"}


@given(stored_logs())
def test_every_tool_call_is_answered_right_after_it(log: list) -> None:  # type: ignore[type-arg]
    messages = build_messages(log)
    for earlier, later in zip(messages, messages[1:], strict=False):
        assert earlier.role != later.role, "consecutive turns of one role are merged"
    for index, message in enumerate(messages):
        calls = [b.id for b in message.content if isinstance(b, pb.ToolUseBlock)]
        if not calls:
            continue
        assert message.role == "assistant"
        following = messages[index + 1]
        answered = [b.tool_use_id for b in following.content if isinstance(b, pb.ToolResultBlock)]
        assert sorted(answered[: len(calls)]) == sorted(calls)
        first_text = next(
            (i for i, b in enumerate(following.content) if isinstance(b, pb.TextBlock)), None
        )
        if first_text is not None:
            assert first_text >= len(calls), "results come before any user text"


def _text(message: pb.Message) -> list[str]:
    return [b.text for b in message.content if isinstance(b, pb.TextBlock)]


def test_text_sent_during_a_model_request_follows_its_response() -> None:
    """The request did not contain it, so the next one must not show it before the reply
    (a trailing assistant turn would read as a prefill)."""
    from sessiond.runtime.wire import events as ev
    from sessiond.runtime.wire.content import TextBlock
    from sessiond.runtime.wire.usage import SpanModelUsage

    usage = SpanModelUsage(
        input_tokens=1, output_tokens=1, cache_creation_input_tokens=0, cache_read_input_tokens=0
    )
    start = ev.SpanModelRequestStart(id="sevt_start")
    log = [
        ev.UserMessage(id="sevt_1", content=[TextBlock(text="start")]),
        ev.SessionStatusRunning(id="sevt_2"),
        start,
        ev.UserMessage(id="sevt_3", content=[TextBlock(text="and also this")]),
        ev.AgentMessage(id="sevt_4", content=[TextBlock(text="first answer")]),
        ev.SpanModelRequestEnd(id="sevt_5", model_request_start_id=start.id, model_usage=usage),
    ]
    messages = build_messages(log)
    assert [(m.role, _text(m)) for m in messages] == [
        ("user", ["start"]),
        ("assistant", ["first answer"]),
        ("user", ["and also this"]),
    ]
    # A request the process died in (never ended) holds nothing back for good.
    assert [(m.role, _text(m)) for m in build_messages(log[:4])] == [
        ("user", ["start", "and also this"]),
    ]
