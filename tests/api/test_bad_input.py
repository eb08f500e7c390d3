"""Every request that once answered 500: each must be a 400 in the Anthropic error body,
with nothing written (rows counted before and after). The hypothesis fuzzer
(test_fuzz_routes.py) looks for new ones; this list pins the ones found, so each stays
fixed whatever the fuzzer happens to draw."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eval_harness import eval_server, wait_run
from harness import ADMIN_KEY, RunningServer, user_message


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with eval_server(tmp_path_factory.mktemp("bad")) as (running, _script):
        yield running


@pytest.fixture(scope="module")
def world(server: RunningServer) -> dict[str, str]:
    """Real ids to aim at: an agent, an environment, a session with events, an eval run."""
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": ADMIN_KEY}) as h:
        agent = h.post("/v1/agents", json={"name": "a", "model": "claude-sonnet-5-5"}).json()
        env = h.post("/v1/environments", json={"name": "e"}).json()
        session = h.post(
            "/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]}
        ).json()
        sent = h.post(
            f"/v1/sessions/{session['id']}/events",
            json={"events": [user_message('{"answer": 42}')]},
        )
        assert sent.status_code == 200, sent.text
        run = h.post(
            "/v1/evals",
            json={"suite": {"cases": [{"id": "c", "input": "hi"}]}, "agent_id": agent["id"]},
        ).json()
        wait_run(h, run["id"])
        wait_idle(h, session["id"])
        # A recording whose last answer is JSON, for the json_schema scorer to read.
        recorded = h.post(
            "/v1/sessions/import",
            json={
                "environment_id": env["id"],
                "session": {"agent": {"id": agent["id"], "version": 1}},
                "events": [
                    {"type": "user.message", "id": "u", "content": [{"type": "text", "text": "?"}]},
                    {
                        "type": "agent.message",
                        "id": "a",
                        "content": [{"type": "text", "text": '{"answer": 42}'}],
                    },
                ],
            },
        ).json()
        long_answer = h.post(
            "/v1/sessions/import",
            json={
                "environment_id": env["id"],
                "session": {"agent": {"id": agent["id"], "version": 1}},
                "events": [
                    {
                        "type": "agent.message",
                        "id": "a",
                        "content": [{"type": "text", "text": json.dumps("x" * 5000)}],
                    },
                ],
            },
        ).json()
    return {
        "long_answer": long_answer["id"],
        "agent": agent["id"],
        "env": env["id"],
        "session": session["id"],
        "run": run["id"],
        "recorded": recorded["id"],
    }


def wait_idle(h: httpx.Client, session_id: str) -> None:
    """Until the engine has answered (its writes must not land inside a test's count)."""
    deadline = time.monotonic() + 20
    while h.get(f"/v1/sessions/{session_id}").json()["status"] != "idle" or not any(
        e["type"] == "session.status_idle"
        for e in h.get(f"/v1/sessions/{session_id}/events").json()["data"]
    ):
        assert time.monotonic() < deadline, "the session never went idle"
        time.sleep(0.02)


def _cursor(*parts: Any) -> str:
    raw = json.dumps(list(parts)).encode()
    return "page_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def _deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _rows(server: RunningServer) -> tuple[int, int]:
    path = server.config.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        records = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return int(records), int(events)


def _scorers_body(scorer: dict[str, Any], w: dict[str, str]) -> dict[str, Any]:
    return {
        "suite": {"cases": [{"id": "c", "input": "hi"}]},
        "agent_id": w["agent"],
        "scorers": [scorer],
    }


# (method, path, query, raw body) built from the world's ids.
CASES: dict[str, Any] = {
    "deep JSON in an agent": lambda w: (
        "POST",
        "/v1/agents",
        {},
        '{"name":"a","model":' + _nested(5000) + "}",
    ),
    "deep JSON in a session's agent": lambda w: (
        "POST",
        "/v1/sessions",
        {},
        '{"agent":' + _nested(5000) + ',"environment_id":"' + w["env"] + '"}',
    ),
    "deep JSON in an environment config": lambda w: (
        "POST",
        "/v1/environments",
        {},
        '{"name":"e","config":{"type":' + _nested(5000) + "}}",
    ),
    "an event nested 971 deep": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/events",
        {},
        '{"events":[' + _deep_object(971) + "]}",
    ),
    "initial events nested 971 deep": lambda w: (
        "POST",
        "/v1/sessions",
        {},
        '{"agent":"'
        + w["agent"]
        + '","environment_id":"'
        + w["env"]
        + '","initial_events":['
        + _deep_object(971)
        + "]}",
    ),
    "a tool schema nested 969 deep": lambda w: (
        "POST",
        f"/v1/agents/{w['agent']}",
        {},
        json.dumps(
            {
                "tools": [
                    {
                        "type": "custom",
                        "name": "t",
                        "description": "d",
                        "input_schema": {"type": "object", "properties": {"p": "__DEEP__"}},
                    }
                ]
            }
        ).replace('"__DEEP__"', _deep_object(969)),
    ),
    "deep JSON in an eval": lambda w: ("POST", "/v1/evals", {}, '{"suite":' + _nested(5000) + "}"),
    "deep JSON in a replay": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/replay",
        {},
        '{"scorers":' + _nested(5000) + "}",
    ),
    "deep JSON in a fork": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/fork",
        {},
        '{"metadata":' + _nested(5000) + "}",
    ),
    "deep JSON in an import": lambda w: (
        "POST",
        "/v1/sessions/import",
        {},
        '{"environment_id":"'
        + w["env"]
        + '","session":{"agent":{}},"events":['
        + _deep_object(600)
        + "]}",
    ),
    "a version past 2^63": lambda w: (
        "GET",
        f"/v1/agents/{w['agent']}",
        {"version": "9223372036854775808"},
        None,
    ),
    "a version of 10^23": lambda w: (
        "GET",
        f"/v1/agents/{w['agent']}",
        {"version": "99999999999999999999999"},
        None,
    ),
    "a version of 1e20": lambda w: ("GET", f"/v1/agents/{w['agent']}", {"version": "1e20"}, None),
    "an agent version of 1e30": lambda w: (
        "POST",
        "/v1/sessions",
        {},
        '{"agent":{"type":"agent","id":"'
        + w["agent"]
        + '","version":1e30},"environment_id":"'
        + w["env"]
        + '"}',
    ),
    "an agent version of 10^30": lambda w: (
        "POST",
        "/v1/sessions",
        {},
        '{"agent":{"type":"agent","id":"'
        + w["agent"]
        + '","version":'
        + "1"
        + "0" * 30
        + '},"environment_id":"'
        + w["env"]
        + '"}',
    ),
    "a fork onto version 10^30": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/fork",
        {},
        '{"agent":{"type":"agent","id":"' + w["agent"] + '","version":' + "1" + "0" * 30 + "}}",
    ),
    "eval versions of 10^30": lambda w: (
        "POST",
        "/v1/evals",
        {},
        json.dumps(
            {"suite": {"cases": [{"id": "c", "input": "hi"}]}, "agent_id": w["agent"]}
        ).replace("}", ',"versions":[' + "1" + "0" * 30 + "]}", 1)[::1],
    ),
    "a versions cursor of 2^63": lambda w: (
        "GET",
        f"/v1/agents/{w['agent']}/versions",
        {"page": _cursor(2**63)},
        None,
    ),
    "an events cursor of 10^30": lambda w: (
        "GET",
        f"/v1/sessions/{w['session']}/events",
        {"order": "desc", "page": _cursor(10**30)},
        None,
    ),
    "an events cursor of 10^30 with a type filter": lambda w: (
        "GET",
        f"/v1/sessions/{w['session']}/events",
        {"types[]": "user.message", "page": _cursor(10**30)},
        None,
    ),
    "an eval events cursor of 10^30": lambda w: (
        "GET",
        f"/v1/evals/{w['run']}/events",
        {"types[]": "x", "page": _cursor(10**30)},
        None,
    ),
    "a sessions cursor of 1e30": lambda w: (
        "GET",
        "/v1/sessions",
        {"page": _cursor(1e30, "x", "next")},
        None,
    ),
    "created_at[lt]=1e18": lambda w: ("GET", "/v1/sessions", {"created_at[lt]": "1e18"}, None),
    "created_at[gt]=-1e18 on events": lambda w: (
        "GET",
        f"/v1/sessions/{w['session']}/events",
        {"created_at[gt]": "-1e18"},
        None,
    ),
    "a baseline version in superscript digits": lambda w: (
        "GET",
        f"/v1/evals/{w['run']}/report",
        {"baseline": w["agent"] + ":²"},
        None,
    ),
    "a baseline version of 5000 digits": lambda w: (
        "GET",
        f"/v1/evals/{w['run']}/report",
        {"baseline": w["agent"] + ":" + "9" * 5000},
        None,
    ),
    "suite scorers that are a number": lambda w: (
        "POST",
        "/v1/evals",
        {},
        json.dumps(
            {"suite": {"cases": [{"id": "c", "input": "hi"}], "scorers": 5}, "agent_id": w["agent"]}
        ),
    ),
    "case scorers that are true": lambda w: (
        "POST",
        "/v1/evals",
        {},
        json.dumps(
            {
                "suite": {"cases": [{"id": "c", "input": "hi", "scorers": True}]},
                "agent_id": w["agent"],
            }
        ),
    ),
    "a regex repeat count past 2^32": lambda w: (
        "POST",
        "/v1/evals",
        {},
        json.dumps(_scorers_body({"type": "regex", "pattern": "a{4294967296}"}, w)),
    ),
    "a regex nested 500 groups deep": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/replay",
        {},
        json.dumps({"scorers": [{"type": "regex", "pattern": "(" * 500 + ")" * 500}]}),
    ),
    "a tool_called pattern past 2^32": lambda w: (
        "POST",
        "/v1/evals",
        {},
        json.dumps(
            _scorers_body(
                {"type": "tool_called", "tool": "bash", "input": {"command": "re:a{4294967296}"}}, w
            )
        ),
    ),
    "a json_schema pattern past 2^32": lambda w: (
        "POST",
        "/v1/evals",
        {},
        json.dumps(
            _scorers_body({"type": "json_schema", "schema": {"pattern": "a{4294967296}"}}, w)
        ),
    ),
    "a python callable with a relative module": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/replay",
        {},
        json.dumps({"scorers": [{"type": "python", "callable": ".x:y"}]}),
    ),
    "unbalanced brackets 100,000 deep in a tool schema": lambda w: (
        "POST",
        "/v1/agents",
        {},
        '{"name":"a","model":"claude-sonnet-5-5","tools":[{"type":"custom","name":"t","description":"d","input_schema":{"type":"object","properties":{"x":'
        + "[" * 100000,
    ),
    "a budget of 2.50": lambda w: (
        "POST",
        "/v1/sessions",
        {},
        json.dumps(
            {
                "agent": w["agent"],
                "environment_id": w["env"],
                "budget": {"type": "limit", "max_list_cost": {"amount": "2.50", "currency": "USD"}},
            }
        ),
    ),
    "a budget with a leading zero": lambda w: (
        "POST",
        "/v1/sessions",
        {},
        json.dumps(
            {
                "agent": w["agent"],
                "environment_id": w["env"],
                "budget": {"type": "limit", "max_list_cost": {"amount": "0100", "currency": "USD"}},
            }
        ),
    ),
    "a python scorer on replay (not allowed)": lambda w: (
        "POST",
        f"/v1/sessions/{w['session']}/replay",
        {},
        json.dumps({"scorers": [{"type": "python", "callable": "os:getcwd"}]}),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_400_that_writes_nothing(
    server: RunningServer, world: dict[str, str], case: str
) -> None:
    method, path, query, body = CASES[case](world)
    before = _rows(server)
    with httpx.Client(
        base_url=server.base_url,
        headers={"x-api-key": ADMIN_KEY, "content-type": "application/json"},
        timeout=30,
    ) as h:
        response = h.request(method, path, params=query, content=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert _rows(server) == before, "a refused request wrote something"


@pytest.mark.parametrize(
    "schema",
    [{"$ref": "#/nope"}, {"$ref": "urn:nope"}, {"$ref": "http://127.0.0.1:9/schema.json"}],
)
def test_a_schema_that_cannot_resolve_is_a_failed_verdict_and_fetches_nothing(
    server: RunningServer, world: dict[str, str], schema: dict[str, Any]
) -> None:
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": ADMIN_KEY}) as h:
        response = h.post(
            f"/v1/sessions/{world['recorded']}/replay",
            json={"scorers": [{"type": "json_schema", "schema": schema}]},
        )
    assert response.status_code == 200, response.text
    (verdict,) = response.json()["scores"]
    assert verdict["passed"] is False and "failed" in verdict["detail"]


def test_a_backtracking_schema_pattern_times_out_without_holding_the_server(
    server: RunningServer, world: dict[str, str]
) -> None:
    """jsonschema checks `pattern` with stdlib re, which has no timeout and keeps the GIL;
    ours runs it on the regex library, bounded (the final message is 5,000 x's)."""
    scorer = {"type": "json_schema", "schema": {"type": "string", "pattern": "(x+x+)+y"}}
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": ADMIN_KEY}) as h:
        response = h.post(f"/v1/sessions/{world['long_answer']}/replay", json={"scorers": [scorer]})
    assert response.status_code == 200, response.text
    (verdict,) = response.json()["scores"]
    assert verdict["passed"] is False and "longer than" in verdict["detail"]


def test_the_depth_check_is_linear_on_unterminated_strings() -> None:
    """An unterminated string used to be re-scanned from every later quote: 120 KB took
    40 s on the loop. Run in a thread, so the old behaviour fails instead of hanging."""
    import threading

    from sessiond.api.bodies import too_deep

    body = b"[" * 65 + b'"' + b'\\"' * 60_000
    found: list[bool] = []
    worker = threading.Thread(target=lambda: found.append(too_deep(body)), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert found == [True]
