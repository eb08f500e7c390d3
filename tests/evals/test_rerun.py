"""Re-running recorded sessions on another agent version, live and from the cassette."""

from __future__ import annotations

from typing import Any

import anthropic
from engine_harness import collect_until_idle
from eval_harness import http, toolset_agent, wait_run
from harness import RunningServer, user_message

# Passes for exactly these final answers; the new version shouts, which fixes "bye" and
# breaks "hello", leaves "calc" passing and "nothing" failing.
SCORER = {"type": "regex", "pattern": "^(echo: hello|ECHO: BYE|tool said: 5)$"}


def _record(client: anthropic.Anthropic) -> tuple[Any, dict[str, str]]:
    agent = toolset_agent(client, name="rerun-target")
    env = client.beta.environments.create(name="recordings")
    recorded: dict[str, str] = {}
    for text in ("hello", "bye", "calc 2+3", "nothing"):
        session = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        collect_until_idle(client, session.id, [user_message(text)])
        recorded[text] = session.id
    return agent, recorded


def test_rerun_on_a_new_version_flips_exactly_the_expected_cases(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent, recorded = _record(client)
    v2 = client.beta.agents.update(agent.id, version=agent.version, system="SHOUT")
    with http(server) as h:
        started = h.post(
            "/v1/evals",
            json={
                "sessions": {"agent_id": agent.id, "agent_version": 1},
                "agent_id": agent.id,
                "versions": [1, v2.version],
                "scorers": [SCORER],
                "concurrency": 4,
            },
        )
        assert started.status_code == 200, started.text
        run = wait_run(h, started.json()["id"])
        assert run["status"] == "completed"
        assert sorted(run["case_ids"]) == sorted(recorded.values())
        assert run["counts"] == {
            "total": 8,
            "started": 8,
            "finished": 8,
            "passed": 4,
            "failed": 4,
            "errors": 0,
            "cancelled": 0,
            "cassette_misses": 0,
        }
        report = h.get(f"/v1/evals/{run['id']}/report").json()
        page = h.get(f"/v1/evals/{run['id']}/report", params={"format": "html"})
    [comparison] = report["comparisons"]
    assert comparison["a"] == [agent.id, 1] and comparison["b"] == [agent.id, v2.version]
    assert comparison["fixed"] == [recorded["bye"]]
    assert comparison["broke"] == [recorded["hello"]]
    flips = {c["case_id"]: c["flip"] for c in comparison["cases"]}
    assert flips[recorded["calc 2+3"]] == "same_pass"
    assert flips[recorded["nothing"]] == "same_fail"
    assert comparison["mcnemar_p"] == 1.0  # one each way: no evidence either way
    assert [v["pass_rate"] for v in report["versions"]] == [0.5, 0.5]
    for result in run["results"]:
        assert result["source_session_id"] == result["case_id"]
        assert result["session_id"] not in recorded.values()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # The flipped cases get an event diff: the agent's message changed.
    assert "Event diff: " + recorded["hello"] in page.text
    assert "ECHO: HELLO" in page.text


def test_cassette_rerun_on_a_changed_prompt_is_a_clear_cassette_miss(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent, recorded = _record(client)
    v2 = client.beta.agents.update(agent.id, version=agent.version, system="SHOUT")
    with http(server) as h:
        started = h.post(
            "/v1/evals",
            json={
                "sessions": {"session_ids": [recorded["hello"]]},
                "agent_id": agent.id,
                "versions": [1, v2.version],
                "cassette": True,
            },
        )
        assert started.status_code == 200, started.text
        run = wait_run(h, started.json()["id"])
    by_version = {r["agent_version"]: r for r in run["results"]}
    assert by_version[1]["status"] == "passed"
    miss = by_version[v2.version]
    assert miss["status"] == "cassette_miss"
    assert miss["error"].startswith("cassette miss:")
    assert "system prompt differs" in miss["error"]
    assert run["counts"]["cassette_misses"] == 1


def test_bad_eval_requests_are_refused_and_write_nothing(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent, recorded = _record(client)
    bad = [
        (
            {"sessions": {"session_ids": [recorded["hello"]]}, "scorers": [{"type": "nope"}]},
            "scorers",
        ),
        (
            {
                "suite": {"cases": [{"id": "x", "input": "hi"}]},
                "agent_id": agent.id,
                "cassette": True,
            },
            "cassette",
        ),
        ({"suite": {"cases": [{"id": "x"}]}, "agent_id": agent.id}, "exactly one of input"),
        (
            {
                "suite": {"cases": [{"id": "x", "input": "a"}, {"id": "x", "input": "b"}]},
                "agent_id": agent.id,
            },
            "duplicate",
        ),
        (
            {
                "suite": {
                    "cases": [
                        {"id": "x", "input": "a", "scorers": [{"type": "regex", "pattern": "("}]}
                    ]
                },
                "agent_id": agent.id,
            },
            "bad pattern",
        ),
        (
            {
                "suite": {"cases": [{"id": "x", "input": "a"}]},
                "agent_id": agent.id,
                "versions": [9],
            },
            "version",
        ),
        ({"suite": {"cases": [{"id": "x", "input": "a"}]}}, "agent_id"),
        (
            {
                "suite": {"cases": [{"id": "x", "input": "a"}]},
                "agent_id": agent.id,
                "concurrency": 0,
            },
            "concurrency",
        ),
    ]
    with http(server) as h:
        before = h.get("/v1/evals", params={"limit": 100}).json()["data"]
        for body, needle in bad:
            response = h.post("/v1/evals", json=body)
            assert response.status_code in (400, 404), (body, response.text)
            error = response.json()["error"]
            assert needle in error["message"], (needle, error)
        after = h.get("/v1/evals", params={"limit": 100}).json()["data"]
    assert after == before
