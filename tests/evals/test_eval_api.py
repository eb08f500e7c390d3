"""`/v1/evals` over HTTP: start, progress stream with a disconnect and resume, cancel."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
from eval_harness import MODEL, http, toolset_agent, wire_events
from harness import ADMIN_KEY, RunningServer

SUITE = {
    "name": "api",
    "scorers": [{"type": "max_turns", "value": 3}],
    "cases": [
        {
            "id": f"case-{i}",
            "input": f"hello {i}",
            "scorers": [{"type": "contains", "value": f"{i}"}],
        }
        for i in range(6)
    ],
}


def _frames(response: httpx.Response, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of persisted SSE frames, up to `limit` of them."""
    out: list[tuple[str, dict[str, Any]]] = []
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in frame and "id" in frame:
                out.append((frame["id"], json.loads(frame["data"])))
                if limit is not None and len(out) >= limit:
                    return out
            frame = {}
            continue
        field, _, value = line.partition(":")
        frame[field] = value.lstrip(" ")
    return out


def test_start_stream_with_resume_and_results(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent = toolset_agent(client, name="api-evals")
    with http(server) as h:
        started = h.post(
            "/v1/evals",
            json={"suite": SUITE, "agent_id": agent.id, "repeats": 2, "concurrency": 3},
        )
        assert started.status_code == 200, started.text
        run = started.json()
        assert run["type"] == "eval_run" and run["status"] == "running"
        assert run["counts"]["total"] == 12
        url = f"/v1/evals/{run['id']}/events/stream"
        with h.stream("GET", url) as first:
            head = _frames(first, limit=5)
        with h.stream("GET", url, headers={"Last-Event-ID": head[-1][0]}) as second:
            tail = _frames(second)  # ends by itself after eval.run_finished
        listed = h.get(f"/v1/evals/{run['id']}/events", params={"limit": 1000}).json()["data"]
        final = h.get(f"/v1/evals/{run['id']}").json()
    seen = [frame_id for frame_id, _ in head + tail]
    assert seen == [e["id"] for e in listed], "no gap and no duplicate across the resume"
    types = [data["type"] for _, data in head + tail]
    assert types[0] == "eval.run_started" and types[-1] == "eval.run_finished"
    assert types.count("eval.case_started") == types.count("eval.case_finished") == 12
    assert final["status"] == "completed"
    assert final["counts"]["passed"] == 12
    results = final["results"]
    assert sorted((r["case_id"], r["repeat"]) for r in results) == sorted(
        (f"case-{i}", k) for i in range(6) for k in range(2)
    )
    # Every result links a real session, tagged with the run, that can be opened.
    for result in results:
        session = client.beta.sessions.retrieve(result["session_id"])
        assert session.metadata["eval_run"] == run["id"]
        assert session.metadata["eval_case"] == result["case_id"]
        assert session.status == "idle"
        assert result["input_tokens"] > 0 and result["turns"] == 1
        assert result["cost_usd"] is not None  # claude-sonnet-* has a list price
    with http(server) as h:
        page = h.get("/v1/evals", params={"limit": 100}).json()
    assert run["id"] in [r["id"] for r in page["data"]]


def test_cancel_mid_run_leaves_no_case_running(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent = toolset_agent(client, name="slow-evals")
    suite = {"cases": [{"id": f"slow-{i}", "input": "slow 3"} for i in range(6)]}
    with http(server) as h:
        run = h.post(
            "/v1/evals", json={"suite": suite, "agent_id": agent.id, "concurrency": 2}
        ).json()
        deadline = time.monotonic() + 10
        while h.get(f"/v1/evals/{run['id']}").json()["counts"]["started"] < 2:
            assert time.monotonic() < deadline, "no case started"
            time.sleep(0.02)
        cancelled = h.post(f"/v1/evals/{run['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        again = h.post(f"/v1/evals/{run['id']}/cancel").json()
    assert body["status"] == "cancelled"
    assert again["status"] == "cancelled" and again["counts"] == body["counts"]
    counts = body["counts"]
    assert counts["cancelled"] >= 2 and counts["finished"] == counts["started"]
    assert counts["started"] < 6, "cases not yet started must not start after a cancel"
    for result in body["results"]:
        assert result["status"] == "cancelled"
        session = client.beta.sessions.retrieve(result["session_id"])
        assert session.status == "idle", "a cancelled case's session must not keep running"
        types = [e["type"] for e in wire_events(client, result["session_id"])]
        assert "user.interrupt" in types


def test_replay_endpoint_rescores_a_stored_session(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent = toolset_agent(client, name="replayed", model=MODEL)
    env = client.beta.environments.create(name="replay")
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="t")
    from engine_harness import collect_until_idle
    from harness import user_message

    collect_until_idle(client, session.id, [user_message("hello replay")])
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": ADMIN_KEY}) as h:
        good = h.post(
            f"/v1/sessions/{session.id}/replay",
            json={"scorers": [{"type": "exact", "value": "echo: hello replay"}]},
        ).json()
        bad = h.post(
            f"/v1/sessions/{session.id}/replay",
            json={"scorers": [{"type": "exact", "value": "something else"}]},
        ).json()
        invalid = h.post(f"/v1/sessions/{session.id}/replay", json={"scorers": [{"type": "x"}]})
    assert good["projection_matches"] and good["passed"] and good["events"] == 6
    assert bad["projection_matches"] and not bad["passed"]
    assert "expected 'something else'" in bad["scores"][0]["detail"]
    assert invalid.status_code == 400
