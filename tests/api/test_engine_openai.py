"""The same scenarios with an OpenAI-backed agent: real `openai` SDK → fake chat completions."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from engine_harness import collect_until_idle, types
from fakes.openai_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Fail, Reply, Script
from harness import ADMIN_KEY, RunningServer, make_config

from sessiond.runtime.providers.routing import ProviderConfig

MODEL = "gpt-5-mini"


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def engine_server(
    script: Script, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with ThreadedServer(create_app(script)) as fake:
        provider = ProviderConfig(
            name="fake-openai", kind="openai", models=["gpt-*"], base_url=fake.base_url + "/v1"
        )
        running = RunningServer(make_config(tmp_path_factory.mktemp("oai"), providers=[provider]))
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
    params: dict[str, object] = {"name": "oai", "model": MODEL, "system": "be brief"}
    params.update(agent)
    made = sdk.beta.agents.create(**params)  # type: ignore[arg-type]
    env = sdk.beta.environments.create(name="env")
    return sdk.beta.sessions.create(agent=made.id, environment_id=env.id).id


def _user(text: str) -> list[dict[str, object]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


def test_plain_and_multi_turn(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Reply(text="Hi from GPT"), Reply(text="again"))
    events = collect_until_idle(sdk, session_id, _user("hello"))
    assert types(events)[-3:] == ["agent.message", "span.model_request_end", "session.status_idle"]
    assert events[-3].content[0].text == "Hi from GPT"
    assert events[-2].model_usage.input_tokens == 11
    collect_until_idle(sdk, session_id, _user("and again"))
    messages = script.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Hi from GPT"
    assert script.requests[0]["stream"] is True
    assert script.requests[0]["stream_options"] == {"include_usage": True}
    assert script.headers[0]["content-type"] == "application/json"
    assert script.headers[0]["authorization"].startswith("Bearer ")


def test_tool_calls_and_their_results(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk, tools=[{"type": "agent_toolset_20260401"}])
    script.push(
        Reply(tool_calls=[("write", {"file_path": "x.txt", "content": "42"})]),
        Reply(tool_calls=[("bash", {"command": "cat x.txt"})]),
        Reply(text="It is 42."),
    )
    events = collect_until_idle(sdk, session_id, _user("go"))
    results = [e for e in events if e.type == "agent.tool_result"]
    assert [r.is_error for r in results] == [False, False] and "42" in results[1].content[0].text
    last = script.requests[2]["messages"]
    tool_messages = [m for m in last if m["role"] == "tool"]
    assert len(tool_messages) == 2 and "42" in tool_messages[1]["content"]
    assistant = [m for m in last if m["role"] == "assistant"]
    assert assistant[0]["tool_calls"][0]["function"]["name"] == "write"
    assert events[-1].stop_reason.type == "end_turn"


def test_custom_tool_round_trip(sdk: anthropic.Anthropic, script: Script) -> None:
    custom = {
        "type": "custom",
        "name": "lookup",
        "description": "d",
        "input_schema": {"type": "object"},
    }
    session_id = _session(sdk, tools=[custom])
    script.push(Reply(tool_calls=[("lookup", {"q": 1})]), Reply(text="thanks"))
    first = collect_until_idle(sdk, session_id, _user("look it up"))
    use = next(e for e in first if e.type == "agent.custom_tool_use")
    result = {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": use.id,
        "content": [{"type": "text", "text": "found"}],
    }
    second = collect_until_idle(sdk, session_id, [result])
    assert second[-1].stop_reason.type == "end_turn"
    tool_message = [m for m in script.requests[1]["messages"] if m["role"] == "tool"][0]
    assert tool_message["content"] == "found"


def test_retries_then_success_and_exhaustion(sdk: anthropic.Anthropic, script: Script) -> None:
    session_id = _session(sdk)
    script.push(Fail(status=503), Reply(text="up again"))
    events = collect_until_idle(sdk, session_id, _user("hi"))
    assert [e.error.type for e in events if e.type == "session.error"] == ["model_overloaded_error"]
    assert "agent.message" in types(events)
    script.push(Fail(status=500), Fail(status=500), Fail(status=500))
    events = collect_until_idle(sdk, session_id, _user("hi again"))
    assert events[-1].stop_reason.type == "retries_exhausted"


@pytest.mark.parametrize("decision", ["allow", "deny"])
def test_always_ask_confirmation(sdk: anthropic.Anthropic, script: Script, decision: str) -> None:
    ask = [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"permission_policy": {"type": "always_ask"}},
        }
    ]
    session_id = _session(sdk, tools=ask)
    script.push(Reply(tool_calls=[("bash", {"command": "echo via-openai"})]), Reply(text="ok"))
    first = collect_until_idle(sdk, session_id, _user("run"))
    use = next(e for e in first if e.type == "agent.tool_use")
    assert use.evaluated_permission == "ask" and first[-1].stop_reason.type == "requires_action"
    confirmation = {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": decision}
    second = collect_until_idle(sdk, session_id, [confirmation])
    result = next(e for e in second if e.type == "agent.tool_result")
    assert result.is_error is (decision == "deny")
    assert ("via-openai" in result.content[0].text) is (decision == "allow")
    tool_message = [m for m in script.requests[1]["messages"] if m["role"] == "tool"][0]
    assert tool_message["tool_call_id"] == use.id


def test_interrupt_during_a_slow_stream(sdk: anthropic.Anthropic, script: Script) -> None:
    import time

    session_id = _session(sdk)
    script.push(Reply(text="token " * 200, chunks=200, chunk_delay_s=0.05))
    sent_at: list[float] = []

    def interrupt(event: object) -> None:
        if getattr(event, "type", "") == "span.model_request_start" and not sent_at:
            sent_at.append(time.monotonic())
            sdk.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])

    events = collect_until_idle(sdk, session_id, _user("go on"), on_event=interrupt)
    assert time.monotonic() - sent_at[0] < 1.0
    assert "agent.message" not in types(events)
    assert next(e for e in events if e.type == "span.model_request_end").is_error
