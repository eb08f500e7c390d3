"""`POST /v1/sessions/{id}/fork`: a copy of the log's prefix, then a live continuation."""

from __future__ import annotations

import time

import anthropic
from engine_harness import collect_until_idle
from eval_harness import http, shape, toolset_agent, wire_events
from harness import RunningServer, user_message


def _recorded(client: anthropic.Anthropic) -> str:
    agent = toolset_agent(client)
    env = client.beta.environments.create(name="env")
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    collect_until_idle(client, session.id, [user_message("calc 2+3")])
    collect_until_idle(client, session.id, [user_message("hello")])
    return session.id


def _wait_idle(client: anthropic.Anthropic, session_id: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.beta.sessions.retrieve(session_id).status == "idle":
            events = wire_events(client, session_id)
            if events and events[-1]["type"] == "session.status_idle":
                return
        time.sleep(0.02)
    raise AssertionError(f"session {session_id} did not go idle")


def test_fork_copies_the_prefix_and_leaves_the_original_alone(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    original = _recorded(client)
    before = wire_events(client, original)
    types = [e["type"] for e in before]
    assert types.count("session.status_idle") == 2
    cuts = {
        "first idle": types.index("session.status_idle"),
        "tool result": types.index("agent.tool_result"),
        "last event": len(before) - 1,
    }
    with http(server) as h:
        for label, cut in cuts.items():
            response = h.post(
                f"/v1/sessions/{original}/fork",
                json={"event_id": before[cut]["id"], "title": f"fork at {label}"},
            )
            assert response.status_code == 200, response.text
            fork = response.json()
            assert fork["id"] != original
            assert fork["forked_from"] == {
                "session_id": original,
                "event_id": before[cut]["id"],
                "events_copied": cut + 1,
            }
            _wait_idle(client, fork["id"])
            forked = wire_events(client, fork["id"])
            assert shape(forked[: cut + 1]) == shape(before[: cut + 1]), label
            assert not {e["id"] for e in forked} & {e["id"] for e in before}
            if label == "tool result":
                # Cut mid-turn: the fork finishes the turn live, as the original did.
                assert (
                    shape(forked)[-3:]
                    == shape(before)[cuts["first idle"] - 2 : cuts["first idle"] + 1]
                )
            else:
                assert len(forked) == cut + 1
    assert wire_events(client, original) == before


def test_fork_onto_another_agent_version_continues_with_it(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    original = _recorded(client)
    session = client.beta.sessions.retrieve(original)
    updated = client.beta.agents.update(
        session.agent.id, version=session.agent.version, system="SHOUT please"
    )
    before = wire_events(client, original)
    with http(server) as h:
        response = h.post(
            f"/v1/sessions/{original}/fork",
            json={
                "event_id": before[-1]["id"],
                "agent": {"type": "agent", "id": updated.id, "version": updated.version},
            },
        )
    assert response.status_code == 200, response.text
    fork = response.json()
    assert fork["agent"]["version"] == updated.version
    frames = collect_until_idle(client, fork["id"], [user_message("bye")])
    replies = [f for f in frames if f.type == "agent.message"]
    assert replies[-1].content[0].text == "ECHO: BYE"


def test_fork_rejects_an_event_of_another_session_and_writes_nothing(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    first, second = _recorded(client), _recorded(client)
    foreign = wire_events(client, second)[0]["id"]
    listed = len(list(client.beta.sessions.list(limit=1000)))
    with http(server) as h:
        response = h.post(f"/v1/sessions/{first}/fork", json={"event_id": foreign})
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "not an event of session" in response.json()["error"]["message"]
        missing = h.post("/v1/sessions/sesn_missing/fork", json={})
        assert missing.status_code == 404
    assert len(list(client.beta.sessions.list(limit=1000))) == listed
