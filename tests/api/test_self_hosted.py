"""Self-hosted environments end to end: the SDK's own `EnvironmentWorker`, in a process of
its own (examples/self_hosted_worker.py), serving sessions of a real sessiond whose model
is a fake Anthropic server; and the work API's rules through the SDK's `work` resource."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from engine_harness import collect_until_idle
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script
from harness import ADMIN_KEY, RunningServer, make_config
from pg_harness import drop_schema, new_schema, postgres_dsn

from sessiond.runtime.providers.routing import ProviderConfig

pytestmark = pytest.mark.slow

MODEL = "claude-sonnet-5-5"
LEASE_TTL_S = 3
SLOW_IN_FIRST = 'echo one > one.txt; [ "$(basename "$PWD")" = first ] && sleep 60; echo ran'
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "self_hosted_worker.py"


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, script: Script, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server per backend: the work queue's leases, tags and notifications are the
    store's, so each test runs on SQLite and on PostgreSQL."""
    overrides: dict[str, object] = {}
    schema = None
    if request.param == "postgres":
        dsn, schema = postgres_dsn(), new_schema()
        overrides["database_url"] = f"{dsn}?schema={schema}"
    with ThreadedServer(create_app(script)) as fake:
        provider = ProviderConfig(
            name="fake-anthropic", kind="anthropic", models=["claude-*"], base_url=fake.base_url
        )
        running = RunningServer(
            make_config(
                tmp_path_factory.mktemp("self-hosted"),
                providers=[provider],
                work_lease_ttl_s=LEASE_TTL_S,
                **overrides,
            )
        )
        running.start()
        try:
            yield running
        finally:
            running.stop()
            if schema is not None:
                asyncio.run(drop_schema(dsn, schema))


@pytest.fixture
def sdk(server: RunningServer, script: Script) -> Iterator[anthropic.Anthropic]:
    script.reset()
    with anthropic.Anthropic(base_url=server.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def _environment(sdk: anthropic.Anthropic, server: RunningServer) -> tuple[str, str]:
    env = sdk.beta.environments.create(name="mine", config={"type": "self_hosted"})
    made = httpx.post(
        f"{server.base_url}/v1/environments/{env.id}/keys",
        headers={"x-api-key": ADMIN_KEY},
        json={"name": "test worker"},
    )
    assert made.status_code == 200, made.text
    assert "secret" in made.json() and made.json()["environment_id"] == env.id
    return env.id, str(made.json()["secret"])


def _session(sdk: anthropic.Anthropic, environment_id: str) -> str:
    agent = sdk.beta.agents.create(
        name="worker-served", model=MODEL, tools=[{"type": "agent_toolset_20260401"}]
    )
    return sdk.beta.sessions.create(agent=agent.id, environment_id=environment_id).id


def _user(text: str) -> list[dict[str, object]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


class Worker:
    """examples/self_hosted_worker.py as a child process."""

    def __init__(self, server: RunningServer, env_id: str, key: str, workdir: Path) -> None:
        self.log_path = workdir.parent / f"{workdir.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIOND_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(EXAMPLE),
                    "--url",
                    server.base_url,
                    "--environment-id",
                    env_id,
                    "--environment-key",
                    key,
                    "--workdir",
                    str(workdir),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _tool_results(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == "user.tool_result"]


def test_the_sdks_worker_runs_the_tools_in_its_own_directory(
    sdk: anthropic.Anthropic, server: RunningServer, script: Script, tmp_path: Path
) -> None:
    env_id, key = _environment(sdk, server)
    workdir = tmp_path / "worker-a"
    worker = Worker(server, env_id, key, workdir)
    try:
        session_id = _session(sdk, env_id)
        script.push(
            Reply(tool_calls=[("write", {"file_path": "made.txt", "content": "by the worker"})]),
            Reply(tool_calls=[("bash", {"command": "pwd; cat made.txt"})]),
            Reply(tool_calls=[("read", {"file_path": "made.txt"})]),
            Reply(text="done"),
        )
        events = collect_until_idle(
            sdk, session_id, _user("use your tools"), timeout_s=60, stop_on_requires_action=False
        )
    finally:
        worker.stop()
    assert events[-1].stop_reason.type == "end_turn", [e.type for e in events]
    results = _tool_results(events)
    assert len(results) == 3, worker.log()[-3000:]
    assert not any(r.is_error for r in results), results
    # The files are the worker's, not the server's.
    assert (workdir / "made.txt").read_text() == "by the worker"
    server_workdir = Path(server.config.workdir_root) / session_id
    assert not (server_workdir / "made.txt").exists()
    bash_text = results[1].content[0].text
    assert str(workdir.resolve()) in bash_text and "by the worker" in bash_text
    # The results reached the model: each request after a call carries its result.
    sent = [json.dumps(r["messages"]) for r in script.requests]
    assert "by the worker" in sent[2] and "by the worker" in sent[3]
    assert not any(e.type == "agent.tool_result" for e in events)


def test_a_killed_worker_is_replaced_after_the_lease_and_nothing_is_answered_twice(
    sdk: anthropic.Anthropic, server: RunningServer, script: Script, tmp_path: Path
) -> None:
    env_id, key = _environment(sdk, server)
    first = Worker(server, env_id, key, tmp_path / "first")
    session_id = _session(sdk, env_id)
    script.push(
        # Slow only in the first worker's directory: it is killed in the middle of it.
        Reply(tool_calls=[("bash", {"command": SLOW_IN_FIRST})]),
        Reply(tool_calls=[("bash", {"command": "echo two"})]),
        Reply(text="finished"),
    )
    second: Worker | None = None
    try:
        with sdk.beta.sessions.events.stream(session_id, timeout=90) as stream:
            sdk.beta.sessions.events.send(session_id, events=_user("go"))  # type: ignore[arg-type]
            seen: list[Any] = []
            seen_result_after_kill = False
            took_over_after = killed_at = 0.0
            for event in stream:
                seen.append(event)
                if event.type == "user.tool_result" and not seen_result_after_kill:
                    seen_result_after_kill = True
                    took_over_after = time.monotonic() - killed_at
                if event.type == "agent.tool_use" and second is None:
                    # The first worker is running the long command: kill it mid-call.
                    deadline = time.monotonic() + 20
                    while not (tmp_path / "first" / "one.txt").exists():
                        assert time.monotonic() < deadline, first.log()[-2000:]
                        time.sleep(0.05)
                    first.kill9()
                    killed_at = time.monotonic()
                    second = Worker(server, env_id, key, tmp_path / "second")
                if event.type == "session.status_idle" and event.stop_reason.type != (
                    "requires_action"
                ):
                    break
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert seen[-1].stop_reason.type == "end_turn", [e.type for e in seen]
    results = _tool_results(seen)
    answered = [r.tool_use_id for r in results]
    assert len(answered) == len(set(answered)) == 2, answered
    calls = [e.id for e in seen if e.type == "agent.tool_use"]
    assert sorted(answered) == sorted(calls)
    # The second worker re-ran the interrupted call in its own directory.
    assert (tmp_path / "second" / "one.txt").exists()
    assert took_over_after >= LEASE_TTL_S - 1, took_over_after
    log = list(sdk.beta.sessions.events.list(session_id))
    stored = [e.tool_use_id for e in log if e.type == "user.tool_result"]
    assert len(stored) == len(set(stored)) == 2


def test_heartbeat_with_a_stale_precondition_gets_412_with_the_current_state(
    sdk: anthropic.Anthropic, server: RunningServer
) -> None:
    env_id, key = _environment(sdk, server)
    _session(sdk, env_id)  # queues its work item
    with anthropic.Anthropic(base_url=server.base_url, auth_token=key, max_retries=0) as worker:
        work = worker.beta.environments.work
        item = work.poll(env_id, block_ms=500)
        assert item is not None and item.secret
        token = json.loads(base64.urlsafe_b64decode(item.secret + "=="))["sessions_token"]
        assert token
        work.ack(item.id, environment_id=env_id)
        first = work.heartbeat(
            item.id, environment_id=env_id, expected_last_heartbeat="NO_HEARTBEAT"
        )
        assert first.lease_extended and first.state == "active" and first.last_heartbeat
        with pytest.raises(anthropic.PreconditionFailedError) as caught:
            work.heartbeat(item.id, environment_id=env_id, expected_last_heartbeat="NO_HEARTBEAT")
        error = caught.value
        assert error.status_code == 412
        details = error.body["error"]["details"]  # type: ignore[index]
        assert details["error_code"] == "heartbeat_precondition_failed"
        assert details["current_state"] == {
            "last_heartbeat": first.last_heartbeat,
            "lease_extended": False,
            "state": "active",
            "ttl_seconds": first.ttl_seconds,
        }
        again = work.heartbeat(
            item.id, environment_id=env_id, expected_last_heartbeat=first.last_heartbeat
        )
        assert again.lease_extended and again.last_heartbeat != first.last_heartbeat
        stopped = work.stop(item.id, environment_id=env_id, force=True)
        assert stopped.state == "stopped"
        with pytest.raises(anthropic.ConflictError) as twice:
            work.stop(item.id, environment_id=env_id, force=True)
        assert twice.value.response.headers.get("x-should-retry") == "false"
        assert work.poll(env_id) is None  # JSON null: nothing queued


def test_a_sessions_token_reaches_its_session_and_nothing_else(
    sdk: anthropic.Anthropic, server: RunningServer
) -> None:
    env_id, key = _environment(sdk, server)
    mine = _session(sdk, env_id)
    other_on_same_env = _session(sdk, env_id)
    cloud_env = sdk.beta.environments.create(name="cloud")
    agent = sdk.beta.agents.create(name="x", model=MODEL)
    elsewhere = sdk.beta.sessions.create(agent=agent.id, environment_id=cloud_env.id).id
    with anthropic.Anthropic(base_url=server.base_url, auth_token=key, max_retries=0) as worker:
        item = None
        for _ in range(5):
            item = worker.beta.environments.work.poll(env_id, block_ms=200)
            if item is not None and item.data.id == mine:
                break
        assert item is not None and item.data.id == mine and item.secret
    token = json.loads(base64.urlsafe_b64decode(item.secret + "=="))["sessions_token"]
    base = server.base_url
    with anthropic.Anthropic(base_url=base, auth_token=token, max_retries=0) as scoped:
        assert scoped.beta.sessions.retrieve(mine).id == mine
        assert list(scoped.beta.sessions.events.list(mine)) == []
        calls = [
            lambda: scoped.beta.sessions.retrieve(other_on_same_env),
            lambda: scoped.beta.sessions.retrieve(elsewhere),
            lambda: scoped.beta.sessions.events.list(other_on_same_env),
            lambda: scoped.beta.sessions.list(),
            lambda: scoped.beta.agents.list(),
            lambda: scoped.beta.agents.retrieve(agent.id),
            lambda: scoped.beta.environments.list(),
            lambda: scoped.beta.environments.retrieve(env_id),
            lambda: scoped.beta.environments.work.list(env_id),
            lambda: scoped.beta.environments.work.stats(env_id),
            lambda: scoped.beta.environments.work.poll(env_id),
            lambda: scoped.beta.sessions.delete(mine),
            lambda: scoped.beta.sessions.update(mine, title="taken over"),
            lambda: scoped.beta.environments.delete(env_id),
        ]
        for call in calls:
            with pytest.raises(anthropic.NotFoundError):
                call()
        with pytest.raises(anthropic.PermissionDeniedError):
            scoped.beta.sessions.events.send(mine, events=_user("not a worker's to say"))  # type: ignore[arg-type]
    raw = httpx.get(f"{base}/v1/api_keys", headers={"authorization": f"Bearer {token}"})
    assert raw.status_code == 404
    # The environment key reaches the environment's sessions, not the others.
    with anthropic.Anthropic(base_url=base, auth_token=key, max_retries=0) as env_client:
        assert env_client.beta.sessions.retrieve(other_on_same_env).id == other_on_same_env
        with pytest.raises(anthropic.NotFoundError):
            env_client.beta.sessions.retrieve(elsewhere)
        with pytest.raises(anthropic.NotFoundError):
            env_client.beta.agents.list()


def test_work_api_reads_and_stats(sdk: anthropic.Anthropic, server: RunningServer) -> None:
    env_id, key = _environment(sdk, server)
    session_id = _session(sdk, env_id)
    with anthropic.Anthropic(base_url=server.base_url, auth_token=key, max_retries=0) as worker:
        work = worker.beta.environments.work
        before = work.stats(env_id)
        assert before.depth == 1 and before.pending == 0 and before.oldest_queued_at
        item = work.poll(env_id, anthropic_worker_id="worker-one")
        assert item is not None and item.data.id == session_id and item.state == "queued"
        during = work.stats(env_id)
        assert during.depth == 1 and during.pending == 1 and during.workers_polling == 1
        listed = list(work.list(env_id))
        assert [w.id for w in listed] == [item.id] and listed[0].secret is None
    updated = sdk.beta.environments.work.update(
        item.id, environment_id=env_id, metadata={"owner": "ops"}
    )
    assert updated.metadata == {"owner": "ops"}
    fetched = sdk.beta.environments.work.retrieve(item.id, environment_id=env_id)
    assert fetched.metadata == {"owner": "ops"} and fetched.secret is None
    with pytest.raises(anthropic.BadRequestError):
        sdk.beta.environments.work.poll(env_id, block_ms=1000)


def test_the_sdks_tool_runner_serves_toolset_and_custom_calls(
    sdk: anthropic.Anthropic, server: RunningServer, script: Script, tmp_path: Path
) -> None:
    """`client.beta.sessions.events.tool_runner` alone (2.17 filters its history with
    `types[]` and re-reads the session's status), with a custom tool beside the toolset."""
    import anyio
    from anthropic.lib.tools import beta_async_tool
    from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401

    env_id, key = _environment(sdk, server)
    agent = sdk.beta.agents.create(
        name="runner-served",
        model=MODEL,
        tools=[
            {"type": "agent_toolset_20260401"},
            {
                "type": "custom",
                "name": "lookup",
                "description": "look a word up",
                "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
            },
        ],
    )
    session_id = sdk.beta.sessions.create(agent=agent.id, environment_id=env_id).id
    script.push(
        Reply(tool_calls=[("bash", {"command": "echo from-the-runner > r.txt; pwd"})]),
        Reply(tool_calls=[("lookup", {"word": "sessiond"})]),
        Reply(text="all done"),
    )

    @beta_async_tool
    async def lookup(word: str) -> str:
        """Look a word up."""
        return f"{word}: an event-sourced session runtime"

    dispatched: list[Any] = []

    async def run() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=server.base_url, auth_token=key, max_retries=0
        ) as client:
            async with AgentToolContext(workdir=str(tmp_path)) as ctx:
                runner = client.beta.sessions.events.tool_runner(
                    session_id,
                    tools=[*beta_agent_toolset_20260401(ctx), lookup],
                    max_idle=1.0,
                    environment_key=key,
                )
                with anyio.fail_after(60):
                    async for call in runner:
                        dispatched.append(call)

    sent = httpx.post(
        f"{server.base_url}/v1/sessions/{session_id}/events",
        headers={"x-api-key": ADMIN_KEY},
        json={"events": _user("go")},
    )
    assert sent.status_code == 200, sent.text
    anyio.run(run)
    assert [c.name for c in dispatched] == ["bash", "lookup"], dispatched
    assert all(c.posted and not c.is_error for c in dispatched), dispatched
    assert (tmp_path / "r.txt").read_text().strip() == "from-the-runner"
    log = list(sdk.beta.sessions.events.list(session_id))
    assert [e.type for e in log].count("user.tool_result") == 1
    assert [e.type for e in log].count("user.custom_tool_result") == 1
    assert log[-1].type == "session.status_idle" and log[-1].stop_reason.type == "end_turn"
    # A result posted again for an answered call is refused and writes nothing.
    bash_call = next(e for e in log if e.type == "agent.tool_use")
    again = httpx.post(
        f"{server.base_url}/v1/sessions/{session_id}/events",
        headers={"authorization": f"Bearer {key}"},
        json={
            "events": [
                {
                    "type": "user.tool_result",
                    "tool_use_id": bash_call.id,
                    "content": [{"type": "text", "text": "twice"}],
                }
            ]
        },
    )
    assert again.status_code == 400 and "already answered" in again.text
    assert len(list(sdk.beta.sessions.events.list(session_id))) == len(log)


def test_the_sdks_poller_drains_the_queue_acking_and_stopping_each_item(
    sdk: anthropic.Anthropic, server: RunningServer
) -> None:
    """`client.beta.environments.work.poller` (drain mode, auto_stop): each item is acked
    before the loop body gets it, and stopped when the body is done with it."""
    import anyio

    env_id, key = _environment(sdk, server)
    sessions = {_session(sdk, env_id) for _ in range(3)}
    seen: list[tuple[str, str]] = []

    async def drain() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=server.base_url, auth_token=key, max_retries=0
        ) as client:
            with anyio.fail_after(30):
                async for item in client.beta.environments.work.poller(
                    environment_id=env_id, environment_key=key, drain=True, block_ms=None
                ):
                    seen.append((item.data.id, item.state))

    anyio.run(drain)
    assert {s for s, _ in seen} == sessions and len(seen) == 3
    items = list(sdk.beta.environments.work.list(env_id))
    assert {w.state for w in items} == {"stopped"} and len(items) == 3
    assert all(w.acknowledged_at and w.stopped_at for w in items)  # acked, then stopped
    stats = sdk.beta.environments.work.stats(env_id)
    assert stats.depth == 0 and stats.pending == 0 and stats.oldest_queued_at is None


def test_another_workspaces_key_finds_no_work_queue(
    sdk: anthropic.Anthropic, server: RunningServer
) -> None:
    """An API key of workspace B sees nothing of workspace A's self-hosted environment:
    not its queue, its items, its stats or its keys (each a 404), and gets no token."""
    env_id, _ = _environment(sdk, server)
    _session(sdk, env_id)
    admin = {"x-api-key": ADMIN_KEY}
    base = server.base_url
    other = httpx.post(f"{base}/v1/workspaces", headers=admin, json={"name": "b"}).json()
    made = httpx.post(
        f"{base}/v1/api_keys", headers=admin, json={"workspace_id": other["id"], "name": "b"}
    ).json()
    item = sdk.beta.environments.work.poll(env_id)  # A's own key takes the item
    assert item is not None
    with anthropic.Anthropic(base_url=base, api_key=made["secret"], max_retries=0) as b:
        work = b.beta.environments.work
        calls = [
            lambda: work.poll(env_id),
            lambda: work.stats(env_id),
            lambda: work.list(env_id),
            lambda: work.retrieve(item.id, environment_id=env_id),
            lambda: work.ack(item.id, environment_id=env_id),
            lambda: work.heartbeat(item.id, environment_id=env_id),
            lambda: work.stop(item.id, environment_id=env_id, force=True),
            lambda: work.update(item.id, environment_id=env_id, metadata={"x": "pwned"}),
        ]
        for call in calls:
            with pytest.raises(anthropic.NotFoundError):
                call()
    keys = httpx.post(
        f"{base}/v1/environments/{env_id}/keys",
        headers={"x-api-key": made["secret"]},
        json={"name": "stolen"},
    )
    assert keys.status_code == 404
    still = sdk.beta.environments.work.retrieve(item.id, environment_id=env_id)
    assert still.state == "queued" and still.metadata == {}


def test_a_voided_sessions_token_is_refused_and_its_open_stream_ends(
    sdk: anthropic.Anthropic, server: RunningServer
) -> None:
    env_id, key = _environment(sdk, server)
    session_id = _session(sdk, env_id)
    with anthropic.Anthropic(base_url=server.base_url, auth_token=key, max_retries=0) as worker:
        item = worker.beta.environments.work.poll(env_id)
        assert item is not None and item.secret
    token = json.loads(base64.urlsafe_b64decode(item.secret + "=="))["sessions_token"]
    url = f"{server.base_url}/v1/sessions/{session_id}/events/stream"
    with httpx.Client(headers={"authorization": f"Bearer {token}"}, timeout=10) as scoped:
        with scoped.stream("GET", url) as stream:
            assert stream.status_code == 200
            sdk.beta.environments.work.stop(item.id, environment_id=env_id, force=True)
            sdk.beta.sessions.events.send(session_id, events=_user("after the stop"))  # type: ignore[arg-type]
            received = b"".join(stream.iter_bytes())  # ends: the server closed it
        assert b"after the stop" not in received
        assert scoped.get(f"{server.base_url}/v1/sessions/{session_id}").status_code == 401
