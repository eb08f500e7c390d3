"""What a shared server needs: API keys listed and revoked, limits that name themselves,
python scorers only from allowed modules, imports checked, work directories apart from
the data and gone with their session. Each refusal must write nothing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from harness import ADMIN_KEY, RunningServer, make_config, user_message

from sessiond.api.config import Config

STREAMS = 2
SENDS = 5
CASES = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(tmp_path_factory.mktemp("tenancy"))
    config.limits = msgspec.structs.replace(
        config.limits, max_streams_per_key=STREAMS, max_events_per_send=SENDS, max_eval_cases=CASES
    )
    config.python_scorer_modules = frozenset({"scorer_fixtures"})
    running = RunningServer(config)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": ADMIN_KEY}) as client:
        yield client


def rows(server: RunningServer, table: str) -> int:
    """Rows in a table of the server's database, read beside it."""
    path = server.config.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error["message"], error["message"]


def session(admin: httpx.Client, model: str = "scripted") -> str:
    agent = admin.post("/v1/agents", json={"name": "a", "model": model}).json()
    env = admin.post("/v1/environments", json={"name": "e"}).json()
    made = admin.post("/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]})
    return str(made.json()["id"])


def test_keys_are_listed_without_secrets_and_revoked_at_once(admin: httpx.Client) -> None:
    workspace = admin.post("/v1/workspaces", json={"name": "team"}).json()["id"]
    created = admin.post("/v1/api_keys", json={"workspace_id": workspace, "name": "ci"}).json()
    secret = created["secret"]
    with httpx.Client(base_url=str(admin.base_url), headers={"x-api-key": secret}) as tenant:
        assert tenant.get("/v1/agents").status_code == 200
        listed = admin.get("/v1/api_keys", params={"workspace_id": workspace}).json()["data"]
        assert [k["id"] for k in listed] == [created["id"]]
        assert secret not in str(listed) and "secret" not in listed[0]
        assert admin.get(f"/v1/api_keys/{created['id']}").json()["revoked_at"] is None
        revoked = admin.post(f"/v1/api_keys/{created['id']}/revoke").json()
        assert revoked["revoked_at"] is not None
        refused(tenant.get("/v1/agents"), 401, "revoked")
    assert admin.get("/v1/api_keys", params={"workspace_id": workspace}).json()["data"] == []
    everything = admin.get(
        "/v1/api_keys", params={"workspace_id": workspace, "include_archived": "true"}
    )
    assert [k["id"] for k in everything.json()["data"]] == [created["id"]]


def test_a_key_needs_a_workspace(admin: httpx.Client, server: RunningServer) -> None:
    before = rows(server, "records")
    refused(admin.post("/v1/api_keys", json={"name": "where?"}), 400, "workspace_id")
    assert rows(server, "records") == before


def test_a_send_over_the_event_limit_is_refused_whole(
    admin: httpx.Client, server: RunningServer
) -> None:
    session_id = session(admin)
    before = rows(server, "events")
    events = [user_message(str(i)) for i in range(SENDS + 1)]
    response = admin.post(f"/v1/sessions/{session_id}/events", json={"events": events})
    refused(response, 400, f"at most {SENDS}", "SESSIOND_MAX_EVENTS_PER_SEND")
    assert rows(server, "events") == before


def test_a_key_holds_a_bounded_number_of_streams(
    admin: httpx.Client, server: RunningServer
) -> None:
    session_id = session(admin)
    url = f"/v1/sessions/{session_id}/events/stream"
    slots = server.app.state.stream_slots
    with admin.stream("GET", url) as first, admin.stream("GET", url) as second:
        assert first.status_code == second.status_code == 200
        refused(admin.get(url), 429, "SESSIOND_MAX_STREAMS_PER_KEY")
    # Both closed by the client: their slots come back as soon as the server sees it.
    deadline = time.monotonic() + 10
    while slots.open("admin") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slots.open("admin") == 0
    with admin.stream("GET", url) as again:
        assert again.status_code == 200


def test_an_eval_over_the_case_limit_is_refused(admin: httpx.Client, server: RunningServer) -> None:
    agent = admin.post("/v1/agents", json={"name": "a", "model": "scripted"}).json()
    before = rows(server, "records")
    suite = {"cases": [{"id": f"c{i}", "input": "hi"} for i in range(CASES + 1)]}
    response = admin.post("/v1/evals", json={"suite": suite, "agent_id": agent["id"]})
    refused(response, 400, f"at most {CASES}", "SESSIOND_MAX_EVAL_CASES")
    assert rows(server, "records") == before


@pytest.mark.parametrize(
    "callable_",
    [
        "sys:exit",
        "os:system",
        "subprocess:run",
        # An allowed module, but what it imported or reaches through attributes:
        "scorer_fixtures:Transcript",
        "scorer_fixtures:half.__globals__",
        "scorer_fixtures:half.__call__",
    ],
)
def test_python_scorers_run_only_from_allowed_modules(
    admin: httpx.Client, server: RunningServer, callable_: str
) -> None:
    agent = admin.post("/v1/agents", json={"name": "a", "model": "scripted"}).json()
    before = rows(server, "records")
    suite = {"cases": [{"id": "c", "input": "hi"}]}
    scorer = {"type": "python", "callable": callable_}
    for body in (
        {"suite": suite, "agent_id": agent["id"], "scorers": [scorer]},
        {"suite": {**suite, "scorers": [scorer]}, "agent_id": agent["id"]},
    ):
        refused(admin.post("/v1/evals", json=body), 400, "SESSIOND_PYTHON_SCORER_MODULES")
    assert rows(server, "records") == before
    assert admin.get("/health").json() == {"ok": True}


def test_an_allowed_scorer_that_exits_is_a_failed_verdict(admin: httpx.Client) -> None:
    from eval_harness import wait_run

    agent = admin.post("/v1/agents", json={"name": "a", "model": "scripted"}).json()
    suite = {
        "cases": [{"id": "c", "input": "hi"}],
        "scorers": [{"type": "python", "callable": "scorer_fixtures:exits"}],
    }
    started = admin.post("/v1/evals", json={"suite": suite, "agent_id": agent["id"]})
    assert started.status_code == 200, started.text
    run = wait_run(admin, started.json()["id"])
    score = run["results"][0]["scores"][0]
    assert score["passed"] is False and "SystemExit" in score["detail"]
    assert admin.get("/health").json() == {"ok": True}


def _forged(events: list[dict[str, Any]], agent: dict[str, Any], env: str) -> dict[str, Any]:
    return {"environment_id": env, "session": {"agent": agent}, "events": events}


USAGE = {
    "input_tokens": 1,
    "output_tokens": 1,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


@pytest.mark.parametrize(
    ("events", "words"),
    [
        (
            [{"type": "agent.tool_result", "id": "r", "tool_use_id": "nowhere"}],
            "not an earlier agent.tool_use",
        ),
        (
            [
                {"type": "session.status_running", "id": "x"},
                {"type": "session.status_idle", "id": "x", "stop_reason": {"type": "end_turn"}},
            ],
            "duplicate event id",
        ),
        (
            [
                {
                    "type": "span.model_request_end",
                    "id": "e",
                    "model_request_start_id": "s",
                    "model_usage": USAGE,
                }
            ],
            "not an earlier span.model_request_start",
        ),
        (
            [
                {"type": "span.model_request_start", "id": "s"},
                {
                    "type": "span.model_request_end",
                    "id": "e1",
                    "model_request_start_id": "s",
                    "model_usage": USAGE,
                },
                {
                    "type": "span.model_request_end",
                    "id": "e2",
                    "model_request_start_id": "s",
                    "model_usage": USAGE,
                },
            ],
            "ended twice",
        ),
        ([{"type": "session.status_running", "id": "bad id!"}], "`id` must be"),
        ([{"type": "no.such_event", "id": "x"}], "events[0]"),
        (
            [
                {
                    "type": "session.status_idle",
                    "id": "i",
                    "stop_reason": {"type": "requires_action", "event_ids": ["ghost"]},
                }
            ],
            "not an earlier",
        ),
    ],
)
def test_an_import_that_does_not_hold_together_writes_nothing(
    admin: httpx.Client, server: RunningServer, events: list[dict[str, Any]], words: str
) -> None:
    agent = admin.post("/v1/agents", json={"name": "a", "model": "scripted"}).json()
    env = admin.post("/v1/environments", json={"name": "e"}).json()["id"]
    before = (rows(server, "records"), rows(server, "events"))
    body = _forged(events, {"id": agent["id"], "version": 1}, env)
    refused(admin.post("/v1/sessions/import", json=body), 400, words)
    assert (rows(server, "records"), rows(server, "events")) == before


def test_an_import_pins_an_agent_of_the_callers_workspace(
    admin: httpx.Client, server: RunningServer
) -> None:
    env = admin.post("/v1/environments", json={"name": "e"}).json()["id"]
    before = rows(server, "records")
    foreign = {"id": "agent_of_someone_else", "version": 1, "tools": [{"type": "custom"}]}
    body = _forged([{"type": "user.message", "id": "m", "content": []}], foreign, env)
    refused(admin.post("/v1/sessions/import", json=body), 400, "pins an agent of this workspace")
    assert rows(server, "records") == before


def test_deleting_a_session_deletes_its_work_directory(
    admin: httpx.Client, server: RunningServer
) -> None:
    session_id = session(admin)
    workdir = Path(server.config.workdir_root) / session_id
    workdir.mkdir(parents=True)
    (workdir / "notes.txt").write_text("left behind?")
    assert admin.delete(f"/v1/sessions/{session_id}").status_code == 200
    assert not workdir.exists()


def test_work_directories_never_overlap_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'sessiond.db'}"
    for root in (data, data / "workdirs", tmp_path):
        with pytest.raises(ValueError, match="overlaps the data directory"):
            Config(database_url=url, workdir_root=str(root)).resolved_workdir_root()
    apart = Config(database_url=url, workdir_root=str(tmp_path / "work"))
    assert apart.resolved_workdir_root() == (tmp_path / "work").resolve()


@pytest.mark.parametrize(
    ("environment", "agent", "words"),
    [
        ({"type": "cloud", "packages": {"apt": ["curl"]}}, {}, "only pip"),
        (
            None,
            {
                "mcp_servers": [{"type": "url", "name": "docs", "url": "https://example.com/mcp"}],
                "tools": [{"type": "mcp_toolset", "mcp_server_name": "docs"}],
            },
            "MCP servers",
        ),
    ],
)
def test_a_session_relying_on_what_is_not_enforced_is_refused(
    admin: httpx.Client,
    server: RunningServer,
    environment: dict[str, Any] | None,
    agent: dict[str, Any],
    words: str,
) -> None:
    """Stored but without effect is worse than refused: a `limited` network that tools
    could leave would only give a false sense of safety."""
    made = admin.post("/v1/agents", json={"name": "a", "model": "scripted", **agent})
    assert made.status_code == 200, made.text
    env_body: dict[str, Any] = {"name": "e"}
    if environment is not None:
        env_body["config"] = environment
    env = admin.post("/v1/environments", json=env_body).json()
    before = rows(server, "records")
    response = admin.post(
        "/v1/sessions", json={"agent": made.json()["id"], "environment_id": env["id"]}
    )
    refused(response, 400, words)
    assert rows(server, "records") == before


def test_a_revoked_keys_open_stream_sends_nothing_more(
    admin: httpx.Client, server: RunningServer
) -> None:
    created = admin.post(
        "/v1/api_keys", json={"workspace_id": "wrkspc_default", "name": "watcher"}
    ).json()
    session_id = session(admin)
    url = f"{server.base_url}/v1/sessions/{session_id}/events/stream"
    with httpx.Client(headers={"x-api-key": created["secret"]}, timeout=10) as tenant:
        with tenant.stream("GET", url) as stream:
            assert stream.status_code == 200
            admin.post(f"/v1/api_keys/{created['id']}/revoke").raise_for_status()
            sent = admin.post(
                f"/v1/sessions/{session_id}/events", json={"events": [user_message("secret")]}
            )
            assert sent.status_code == 200
            received = b"".join(stream.iter_bytes())  # ends: the server closed it
    assert b"secret" not in received


def test_an_environment_changed_to_ask_for_the_unenforced_refuses_sends(
    admin: httpx.Client, server: RunningServer
) -> None:
    agent = admin.post("/v1/agents", json={"name": "a", "model": "scripted"}).json()
    env = admin.post("/v1/environments", json={"name": "e"}).json()
    made = admin.post("/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]})
    session_id = made.json()["id"]
    changed = admin.post(
        f"/v1/environments/{env['id']}",
        json={"config": {"type": "cloud", "packages": {"gem": ["rails"]}}},
    )
    assert changed.status_code == 200, changed.text
    before = rows(server, "events")
    response = admin.post(
        f"/v1/sessions/{session_id}/events", json={"events": [user_message("hi")]}
    )
    refused(response, 400, "only pip")
    assert rows(server, "events") == before
