"""kill -9 in the middle of a turn, restart on the same database, and finish the turn.

The server is a real `sessiond serve` process; the model is the fake Messages API in
this process. After the restart the log must be contiguous, hold no duplicate, show the
`session.status_rescheduled`, and end idle.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script

pytestmark = pytest.mark.slow

KEY = "sk-crash-test"


class ServerProcess:
    """`sessiond serve` on port 0, its URL read from its first lines."""

    def __init__(self, data_dir: Path, fake_url: str, **extra_env: str) -> None:
        providers = [
            {"name": "fake", "kind": "anthropic", "models": ["claude-*"], "base_url": fake_url}
        ]
        env = {
            **os.environ,
            "SESSIOND_DATA_DIR": str(data_dir),
            "SESSIOND_WORKDIR_ROOT": str(data_dir.with_name(data_dir.name + "-work")),
            "SESSIOND_API_KEY": KEY,
            "SESSIOND_PROVIDERS": json.dumps(providers),
            **extra_env,
        }
        self.log_path = data_dir / f"server-{os.urandom(3).hex()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sessiond.api.cli", "serve", "--port", "0"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(300):
            found = re.search(r"listening on (http://\S+)", self.log_path.read_text())
            if found:
                self.url = found.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)  # polling a child's log file: there is nothing to wait on
        raise RuntimeError(f"server did not start: {self.log_path.read_text()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


@pytest.fixture
def fake() -> Iterator[tuple[ThreadedServer, Script]]:
    script = Script()
    with ThreadedServer(create_app(script)) as server:
        yield server, script


def _client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)


def _start_turn_and_kill_at(
    server: ServerProcess, kill_at: str, tools: list[Any], script: Script
) -> str:
    with _client(server.url) as sdk:
        agent = sdk.beta.agents.create(name="crash", model="claude-sonnet-5-5", tools=tools)
        env = sdk.beta.environments.create(name="e")
        session_id = sdk.beta.sessions.create(agent=agent.id, environment_id=env.id).id
        with sdk.beta.sessions.events.stream(session_id, timeout=20) as stream:
            sdk.beta.sessions.events.send(
                session_id,
                events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
            )
            for event in stream:
                if event.type == kill_at:
                    if kill_at == "span.model_request_start":
                        _wait_for_request(script)  # kill mid-answer, not before the ask
                    server.kill9()
                    break
            else:
                raise AssertionError(f"never saw {kill_at}")
    return session_id


def _wait_for_request(script: Script) -> None:
    deadline = time.monotonic() + 5
    while not script.requests:
        if time.monotonic() > deadline:
            raise AssertionError("the model was never asked")
        time.sleep(0.01)  # the fake runs in a thread; its request list is polled


def _wait_idle(url: str, session_id: str) -> list[Any]:
    with _client(url) as sdk:
        events = list(sdk.beta.sessions.events.list(session_id, limit=1000))
        if events[-1].type != "session.status_idle":
            # Resume after the last listed event: nothing appended in between is missed.
            resume = {"after": events[-1].id}
            with sdk.beta.sessions.events.stream(session_id, timeout=20, extra_query=resume) as s:
                # Pings keep a stream alive forever: a turn that never ends must fail the
                # test, not hang it.
                watchdog = threading.Timer(30, s.close)
                watchdog.start()
                try:
                    for event in s:
                        if event.type == "session.status_idle":
                            break
                except Exception:
                    pass  # closed by the watchdog: the caller's checks say what is missing
                finally:
                    watchdog.cancel()
        return list(sdk.beta.sessions.events.list(session_id, limit=1000))


def _stored_log(data_dir: Path, session_id: str) -> list[tuple[int, str, str]]:
    with sqlite3.connect(data_dir / "sessiond.db") as conn:
        return conn.execute(
            "SELECT seq, id, type FROM events WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()


@pytest.mark.parametrize(
    ("kill_at", "first", "tools"),
    [
        ("span.model_request_start", Reply(text="slow " * 40, chunks=40, chunk_delay_s=0.1), []),
        (
            "agent.tool_use",
            Reply(tool_calls=[("bash", {"command": "sleep 2; echo slept"})]),
            [{"type": "agent_toolset_20260401"}],
        ),
        ("agent.message", Reply(text="the final answer"), []),
    ],
    ids=["before-the-model-answers", "between-tool-use-and-result", "after-the-final-message"],
)
def test_kill_9_mid_turn_then_restart_finishes_the_turn(
    tmp_path: Path,
    fake: tuple[ThreadedServer, Script],
    kill_at: str,
    first: Reply,
    tools: list[Any],
) -> None:
    fake_server, script = fake
    script.push(first, Reply(text="recovered"))
    server = ServerProcess(tmp_path, fake_server.base_url)
    try:
        session_id = _start_turn_and_kill_at(server, kill_at, tools, script)
        before = _stored_log(tmp_path, session_id)
        restarted = ServerProcess(tmp_path, fake_server.base_url)
        try:
            events = _wait_idle(restarted.url, session_id)
        finally:
            restarted.stop()
    finally:
        server.stop()
    log = _stored_log(tmp_path, session_id)
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1)), "seq must stay contiguous"
    assert len({event_id for _, event_id, _ in log}) == len(log), "no event twice"
    assert log[: len(before)] == before, "nothing acknowledged before the kill was lost"
    kinds = [kind for _, _, kind in log]
    # The last point races the idle append (milliseconds apart): a kill that lands after
    # it leaves nothing to resume, which is right too.
    finished_before_kill = before[-1][2] == "session.status_idle"
    assert ("session.status_rescheduled" in kinds) is not finished_before_kill
    assert finished_before_kill is False or kill_at == "agent.message"
    assert kinds[-1] == "session.status_idle" and events[-1].stop_reason.type == "end_turn"
    messages = [e for e in events if e.type == "agent.message"]
    if kill_at == "agent.message":
        assert [m.content[0].text for m in messages] == ["the final answer"]
    else:
        assert messages[-1].content[0].text == "recovered"
    if kill_at == "agent.tool_use":
        assert kinds.count("agent.tool_use") == 1 and kinds.count("agent.tool_result") == 1


@pytest.mark.parametrize("moment", ["send-in-flight", "send-acknowledged"])
def test_a_message_committed_just_before_a_crash_is_answered_exactly_once(
    tmp_path: Path, fake: tuple[ThreadedServer, Script], moment: str
) -> None:
    """The kill lands after the `user.message` commits and before the engine's first
    append, deterministically: the server kills itself at the `input_committed` crash
    point (the send never returns), or it runs with the engine off, so the acknowledged
    message waits untouched until the kill. The session is idle with its input pending;
    the restart must find it (by its due flag) and answer it once."""
    fake_server, script = fake
    script.push(Reply(text="answered"))
    env = {"SESSIOND_CRASH_AT": "input_committed"}
    if moment == "send-acknowledged":
        env = {"SESSIOND_RUN_ENGINE": "0"}
    server = ServerProcess(tmp_path, fake_server.base_url, **env)
    message = [{"type": "user.message", "content": [{"type": "text", "text": "still there?"}]}]
    try:
        with _client(server.url) as sdk:
            agent = sdk.beta.agents.create(name="crash", model="claude-sonnet-5-5")
            environment = sdk.beta.environments.create(name="e")
            session_id = sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id).id
            if moment == "send-in-flight":
                with pytest.raises(anthropic.APIConnectionError):
                    sdk.beta.sessions.events.send(session_id, events=message)  # type: ignore[arg-type]
                assert server.proc.wait(timeout=10) == -signal.SIGKILL
            else:
                sdk.beta.sessions.events.send(session_id, events=message)  # type: ignore[arg-type]
                server.kill9()
    finally:
        server.stop()
    before = _stored_log(tmp_path, session_id)
    assert [kind for _, _, kind in before] == ["user.message"]
    assert script.requests == []
    restarted = ServerProcess(tmp_path, fake_server.base_url)
    try:
        events = _wait_idle(restarted.url, session_id)
    finally:
        restarted.stop()
    kinds = [e.type for e in events]
    assert kinds == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert events[3].content[0].text == "answered"
    assert len(script.requests) == 1
