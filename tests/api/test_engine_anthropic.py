"""The turn loop end to end: SDK client → sessiond → real `anthropic` SDK → fake Messages API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from engine_harness import collect_until_idle, types
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Fail, Reply, Script
from harness import ADMIN_KEY, RunningServer, make_config

from sessiond.runtime.providers.routing import ProviderConfig

MODEL = "claude-sonnet-5-5"


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def engine_server(
    script: Script, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with ThreadedServer(create_app(script)) as fake:
        provider = ProviderConfig(
            name="fake-anthropic", kind="anthropic", models=["claude-*"], base_url=fake.base_url
        )
        running = RunningServer(
            make_config(tmp_path_factory.mktemp("engine"), providers=[provider])
        )
        running.start()
        yield running
        running.stop()


@pytest.fixture
def sdk(engine_server: RunningServer, script: Script) -> Iterator[anthropic.Anthropic]:
    script.reset()
    with anthropic.Anthropic(
        base_url=engine_server.base_url, api_key=ADMIN_KEY, max_retries=0
    ) as c:
        yield c


def _session(sdk: anthropic.Anthropic, **agent: object) -> str:
    params: dict[str, object] = {"name": "e2e", "model": MODEL, "system": "be brief"}
    params.update(agent)
    made = sdk.beta.agents.create(**params)  # type: ignore[arg-type]
    env = sdk.beta.environments.create(name="env")
    return sdk.beta.sessions.create(agent=made.id, environment_id=env.id).id


def _user(text: str) -> list[dict[str, object]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


TOOLSET = [{"type": "agent_toolset_20260401"}]


def test_a_plain_turn(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Reply(text="Hello there"))
    events = collect_until_idle(sdk, session_id, _user("hi"))
    assert types(events) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert events[3].content[0].text == "Hello there"
    assert events[4].model_request_start_id == events[2].id
    assert events[4].model_usage.input_tokens == 11 and events[4].model_usage.output_tokens == 7
    assert events[5].stop_reason.type == "end_turn"
    assert script.requests[0]["system"] == "be brief"
    assert script.requests[0]["model"] == MODEL
    assert script.requests[0]["stream"] is True
    sent_headers = script.headers[0]
    assert sent_headers["content-type"] == "application/json"
    assert sent_headers["anthropic-version"]
    assert sent_headers["user-agent"].startswith("AsyncAnthropic")
    session = sdk.beta.sessions.retrieve(session_id)
    assert session.status == "idle"
    assert session.usage.input_tokens == 11 and session.usage.output_tokens == 7


def test_multi_turn_sends_the_prior_turns(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Reply(text="first answer"), Reply(text="second answer"))
    collect_until_idle(sdk, session_id, _user("first question"))
    collect_until_idle(sdk, session_id, _user("second question"))
    messages = script.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["text"] == "first question"
    assert messages[1]["content"][0]["text"] == "first answer"
    assert messages[2]["content"][0]["text"] == "second question"


def test_toolset_write_then_read(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk, tools=TOOLSET)
    script.push(
        Reply(tool_calls=[("write", {"file_path": "notes.txt", "content": "remember me"})]),
        Reply(tool_calls=[("read", {"file_path": "notes.txt"})]),
        Reply(text="The file says: remember me"),
    )
    events = collect_until_idle(sdk, session_id, _user("write then read"))
    results = [e for e in events if e.type == "agent.tool_result"]
    assert len(results) == 2 and not any(r.is_error for r in results)
    assert "remember me" in results[1].content[0].text
    uses = [e for e in events if e.type == "agent.tool_use"]
    assert [u.name for u in uses] == ["write", "read"]
    assert uses[0].evaluated_permission == "allow"
    third = script.requests[2]["messages"]
    tool_results = [b for m in third for b in m["content"] if b.get("type") == "tool_result"]
    assert len(tool_results) == 2 and "remember me" in tool_results[1]["content"][0]["text"]
    assert {t["name"] for t in script.requests[0]["tools"]} >= {"bash", "read", "write", "edit"}
    assert events[-1].stop_reason.type == "end_turn"


def test_custom_tool_round_trip(sdk: anthropic.Anthropic, script: Script) -> None:
    custom = {
        "type": "custom",
        "name": "lookup",
        "description": "look up a fact",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    session_id = _session(sdk, tools=[custom])
    script.push(Reply(tool_calls=[("lookup", {"q": "capital of France"})]), Reply(text="Paris."))
    first = collect_until_idle(sdk, session_id, _user("what is the capital?"))
    use = next(e for e in first if e.type == "agent.custom_tool_use")
    assert use.name == "lookup" and use.input == {"q": "capital of France"}
    assert first[-1].stop_reason.type == "requires_action"
    assert first[-1].stop_reason.event_ids == [use.id]
    result = {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": use.id,
        "content": [{"type": "text", "text": "Paris"}],
    }
    second = collect_until_idle(sdk, session_id, [result])
    assert "agent.message" in types(second) and second[-1].stop_reason.type == "end_turn"
    sent = script.requests[1]["messages"][-1]["content"][0]
    assert sent["type"] == "tool_result" and sent["content"][0]["text"] == "Paris"


@pytest.mark.parametrize("decision", ["allow", "deny"])
def test_always_ask_waits_for_confirmation(
    sdk: anthropic.Anthropic, script: Script, decision: str, tmp_path: Path
) -> None:
    ask = [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"permission_policy": {"type": "always_ask"}},
        }
    ]
    session_id = _session(sdk, tools=ask)
    script.push(Reply(tool_calls=[("bash", {"command": "echo ran-it"})]), Reply(text="ok"))
    first = collect_until_idle(sdk, session_id, _user("run it"))
    use = next(e for e in first if e.type == "agent.tool_use")
    assert use.evaluated_permission == "ask" and use.evaluation.type == "always_ask"
    assert first[-1].stop_reason.type == "requires_action"
    confirmation: dict[str, object] = {
        "type": "user.tool_confirmation",
        "tool_use_id": use.id,
        "result": decision,
    }
    if decision == "deny":
        confirmation["deny_message"] = "not today"
    second = collect_until_idle(sdk, session_id, [confirmation])
    result = next(e for e in second if e.type == "agent.tool_result")
    if decision == "allow":
        assert not result.is_error and "ran-it" in result.content[0].text
    else:
        assert result.is_error and "not today" in result.content[0].text
    sent = script.requests[1]["messages"][-1]["content"][0]
    assert sent["is_error"] is (decision == "deny")
    assert second[-1].stop_reason.type == "end_turn"


def test_interrupt_during_a_slow_stream(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Reply(text="word " * 200, chunks=200, chunk_delay_s=0.05))
    import time

    interrupted_at: list[float] = []

    def interrupt_once_streaming(event: object) -> None:
        if getattr(event, "type", "") == "span.model_request_start" and not interrupted_at:
            interrupted_at.append(time.monotonic())
            sdk.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])

    events = collect_until_idle(
        sdk, session_id, _user("talk a lot"), on_event=interrupt_once_streaming
    )
    idle_after_s = time.monotonic() - interrupted_at[0]
    assert idle_after_s < 1.0, f"interrupt took {idle_after_s:.2f} s"
    assert "agent.message" not in types(events)
    end = next(e for e in events if e.type == "span.model_request_end")
    assert end.is_error
    assert events[-1].stop_reason.type == "end_turn"
    assert sdk.beta.sessions.retrieve(session_id).status == "idle"


def test_input_sent_during_a_model_call_is_answered_in_the_same_turn(
    sdk: anthropic.Anthropic, script: Script
) -> None:
    """The engine ends a turn in the same commit as the final answer only if nothing was
    appended since it planned: a message that came during the call gets its own request
    before the session goes idle, and the log never says idle with input unanswered."""
    session_id = _session(sdk)
    script.push(
        Reply(text="first " * 20, chunks=20, chunk_delay_s=0.03), Reply(text="second answer")
    )
    sent: list[bool] = []

    def follow_up_while_streaming(event: object) -> None:
        if getattr(event, "type", "") == "span.model_request_start" and not sent:
            sent.append(True)
            sdk.beta.sessions.events.send(session_id, events=_user("and also this"))

    events = collect_until_idle(sdk, session_id, _user("start"), on_event=follow_up_while_streaming)
    assert types(events) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "user.message",
        "agent.message",
        "span.model_request_end",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert events[-1].stop_reason.type == "end_turn"
    second = script.requests[1]["messages"]
    assert second[-1]["content"][-1]["text"] == "and also this"
    assert len(script.requests) == 2


def test_a_tool_turn_takes_four_appends_after_the_input(
    sdk: anthropic.Anthropic, script: Script
) -> None:
    """Going running with the span start, the last tool result with the next span start,
    and the final answer with the idle are single appends (the log reads the same)."""
    session_id = _session(sdk, tools=[{"type": "agent_toolset_20260401"}])
    script.push(Reply(tool_calls=[("bash", {"command": "echo hi"})]), Reply(text="it said hi"))
    events = collect_until_idle(sdk, session_id, _user("run it"))
    assert types(events) == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    # The events of one append share their processed_at; separate appends do not.
    stamps = [e.processed_at for e in sdk.beta.sessions.events.list(session_id)]
    assert len(stamps) == 10
    assert len(set(stamps[1:])) == 4, stamps


def test_retries_that_succeed_are_logged(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Fail(status=529), Fail(status=429, retry_after="0"), Reply(text="finally"))
    events = collect_until_idle(sdk, session_id, _user("hi"))
    errors = [e for e in events if e.type == "session.error"]
    assert [e.error.type for e in errors] == ["model_overloaded_error", "model_rate_limited_error"]
    assert all(e.error.retry_status.type == "retrying" for e in errors)
    assert next(e for e in events if e.type == "agent.message").content[0].text == "finally"
    assert len(script.requests) == 3


def test_retries_exhausted_end_the_turn(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Fail(status=500), Fail(status=500), Fail(status=500))
    events = collect_until_idle(sdk, session_id, _user("hi"))
    errors = [e for e in events if e.type == "session.error"]
    assert [e.error.retry_status.type for e in errors] == ["retrying", "retrying", "exhausted"]
    assert events[-1].stop_reason.type == "retries_exhausted"
    # A non-retryable error is not retried at all.
    script.push(Fail(status=400, message="bad request"))
    before = len(script.requests)
    events = collect_until_idle(sdk, session_id, _user("again"))
    assert len(script.requests) == before + 1
    assert events[-1].stop_reason.type == "retries_exhausted"


def test_deltas_preview_the_final_message(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Reply(text="streamed words arrive in pieces", chunks=4, chunk_delay_s=0.02))
    events = collect_until_idle(sdk, session_id, _user("hi"), event_deltas=["agent.message"])
    starts = [e for e in events if e.type == "event_start"]
    deltas = [e for e in events if e.type == "event_delta"]
    final = next(e for e in events if e.type == "agent.message")
    assert len(starts) == 1 and starts[0].event.id == final.id
    # Previews are best effort: one that loses the race against its final event is dropped,
    # so what arrived is a prefix of the final text (the first pieces always make it).
    previewed = "".join(d.delta.content.text for d in deltas)
    assert len(deltas) >= 3 and final.content[0].text.startswith(previewed)
    assert all(d.event_id == final.id and d.delta.index == 0 for d in deltas)
    listed = [e.type for e in sdk.beta.sessions.events.list(session_id)]
    assert "event_delta" not in listed and "event_start" not in listed
