"""Several processes on one PostgreSQL database: API processes without an engine, workers
without HTTP, kill -9 of a worker mid-turn, and a worker paused past its lease.

Every process is a real `sessiond` on loopback; the model is the fake Messages API in
this process; each test has a schema of its own in the test database.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import pytest
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script
from harness import user_message
from pg_harness import drop_schema, new_schema, postgres_dsn
from processes import KEY, SessiondProcess, api_process, sessiond_env, worker_process

pytestmark = pytest.mark.slow

SESSIONS = 6
TTL_S = "2"


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    dsn, schema = postgres_dsn(), new_schema()
    yield dsn, schema
    asyncio.run(drop_schema(dsn, schema))


def _client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)


def _slow(text: str) -> Reply:
    return Reply(text=text, chunks=10, chunk_delay_s=0.1)


def _deployment_env(dsn: str, schema: str, fake_url: str, tmp: Path) -> dict[str, str]:
    providers = [
        {"name": "fake", "kind": "anthropic", "models": ["claude-*"], "base_url": fake_url}
    ]
    return sessiond_env(
        f"{dsn}?schema={schema}",
        tmp / "work",
        providers,
        SESSIOND_LEASE_TTL_S=TTL_S,
        SESSIOND_SWEEP_S="0.3",
    )


def _stored(dsn: str, schema: str, session_id: str) -> list[tuple[int, str, str, bytes]]:
    async def read() -> list[tuple[int, str, str, bytes]]:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            rows = await conn.fetch(
                "SELECT seq, id, type, data FROM events WHERE session_id = $1 ORDER BY seq",
                session_id,
            )
        finally:
            await conn.close()
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    return asyncio.run(read())


def _tail_until_idle(url: str, session_id: str, turns: int, out: list[Any]) -> None:
    """Through another API process than the one the messages go to."""
    with (
        _client(url) as sdk,
        sdk.beta.sessions.events.stream(
            session_id, timeout=60, event_deltas=["agent.message"]
        ) as stream,
    ):
        idles = 0
        for event in stream:
            out.append(event)
            if event.type == "session.status_idle":
                idles += 1
                if idles == turns:
                    return


def _check_log(log: list[tuple[int, str, str, bytes]]) -> None:
    """Contiguous, no duplicate, every message answered, never two turns at once."""
    assert [seq for seq, _, _, _ in log] == list(range(1, len(log) + 1))
    assert len({event_id for _, event_id, _, _ in log}) == len(log)
    kinds = [kind for _, _, kind, _ in log]
    assert kinds[-1] == "session.status_idle", kinds
    for index, kind in enumerate(kinds):
        if kind == "user.message":
            assert "agent.message" in kinds[index:], f"unanswered message at {index}: {kinds}"
    open_starts = 0
    for kind in kinds:
        if kind == "span.model_request_start":
            # A second request while one is open: only after its worker died (rescheduled).
            assert open_starts == 0, f"two model requests at once: {kinds}"
            open_starts = 1
        elif kind in ("span.model_request_end", "session.status_rescheduled"):
            open_starts = 0


def test_two_apis_and_two_workers_and_a_worker_killed_mid_turn(
    database: tuple[str, str], tmp_path: Path
) -> None:
    dsn, schema = database
    script = Script(responder=lambda body: _slow("answered"))
    processes: list[SessiondProcess] = []
    with ThreadedServer(create_app(script)) as fake:
        env = _deployment_env(dsn, schema, fake.base_url, tmp_path)
        try:
            api_a = api_process(tmp_path, "api-a", env, "--no-engine")
            processes.append(api_a)
            api_b = api_process(tmp_path, "api-b", env, "--no-engine")
            processes.append(api_b)
            workers = [worker_process(tmp_path, f"worker-{i}", env) for i in (1, 2)]
            processes.extend(workers)
            with _client(api_a.url) as sdk:
                agent = sdk.beta.agents.create(name="scale", model="claude-sonnet-5-5")
                environment = sdk.beta.environments.create(name="e")
                ids = [
                    sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id).id
                    for _ in range(SESSIONS)
                ]
                # Round 1: messages through A, streams through B; every session completes.
                seen: dict[str, list[Any]] = {i: [] for i in ids}
                tails = [
                    threading.Thread(target=_tail_until_idle, args=(api_b.url, i, 1, seen[i]))
                    for i in ids
                ]
                for tail in tails:
                    tail.start()
                time.sleep(0.5)  # the tails connect (a live tail starts at the log's end)
                for session_id in ids:
                    sdk.beta.sessions.events.send(session_id, events=[user_message("one")])  # type: ignore[list-item]
                for tail in tails:
                    tail.join(timeout=60)
                for session_id in ids:
                    texts = [
                        e.content[0].text for e in seen[session_id] if e.type == "agent.message"
                    ]
                    assert texts == ["answered"], (session_id, [e.type for e in seen[session_id]])
                # Round 2: kill -9 one worker while turns are in flight.
                asked = len(script.requests)
                for session_id in ids:
                    sdk.beta.sessions.events.send(session_id, events=[user_message("two")])  # type: ignore[list-item]
                deadline = time.monotonic() + 20
                while len(script.requests) < asked + 2:  # polled: the fake runs in a thread
                    assert time.monotonic() < deadline, "no turn started"
                    time.sleep(0.02)
                workers[0].kill9()
                deadline = time.monotonic() + 60
                for session_id in ids:
                    while True:
                        session = sdk.beta.sessions.retrieve(session_id)
                        events = list(sdk.beta.sessions.events.list(session_id, limit=1000))
                        answers = [e for e in events if e.type == "agent.message"]
                        if session.status == "idle" and len(answers) >= 2:
                            break
                        assert time.monotonic() < deadline, (session_id, session.status)
                        time.sleep(0.1)
        finally:
            for process in processes:
                process.stop()
    rescheduled = 0
    for session_id in ids:
        log = _stored(dsn, schema, session_id)
        _check_log(log)
        rescheduled += [kind for _, _, kind, _ in log].count("session.status_rescheduled")
    assert rescheduled >= 1, "the killed worker's sessions were taken over"
    assert "Traceback" not in workers[1].log()


def test_a_worker_paused_past_its_lease_cannot_write(
    database: tuple[str, str], tmp_path: Path
) -> None:
    dsn, schema = database
    script = Script(responder=lambda body: Reply(text="from-b"))
    script.push(Reply(text="from-a", chunks=20, chunk_delay_s=0.2))  # the first request: slow
    processes: list[SessiondProcess] = []
    with ThreadedServer(create_app(script)) as fake:
        env = _deployment_env(dsn, schema, fake.base_url, tmp_path)
        try:
            api = api_process(tmp_path, "api", env, "--no-engine")
            processes.append(api)
            first = worker_process(tmp_path, "worker-a", env)
            processes.append(first)
            with _client(api.url) as sdk:
                agent = sdk.beta.agents.create(name="stale", model="claude-sonnet-5-5")
                environment = sdk.beta.environments.create(name="e")
                session_id = sdk.beta.sessions.create(
                    agent=agent.id, environment_id=environment.id
                ).id
                sdk.beta.sessions.events.send(session_id, events=[user_message("go")])  # type: ignore[list-item]
                deadline = time.monotonic() + 20
                while not script.requests:  # worker-a is mid-request
                    assert time.monotonic() < deadline, "worker-a never asked the model"
                    time.sleep(0.02)
                first.proc.send_signal(signal.SIGSTOP)
                second = worker_process(tmp_path, "worker-b", env)
                processes.append(second)
                deadline = time.monotonic() + 30
                while True:  # worker-b takes over once worker-a's lease has expired
                    events = list(sdk.beta.sessions.events.list(session_id, limit=1000))
                    if any(e.type == "agent.message" for e in events) and (
                        sdk.beta.sessions.retrieve(session_id).status == "idle"
                    ):
                        break
                    assert time.monotonic() < deadline, [e.type for e in events]
                    time.sleep(0.1)
                first.proc.send_signal(signal.SIGCONT)
                # worker-a wakes up holding a stale lease: its renewal fails, or its
                # append is refused by the fence. Either way it says so and writes nothing.
                first.wait_for(r"lost the lease|another worker holds it now", timeout_s=30)
                events = list(sdk.beta.sessions.events.list(session_id, limit=1000))
        finally:
            for process in processes:
                process.proc.send_signal(signal.SIGCONT)
                process.stop()
    texts = [e.content[0].text for e in events if e.type == "agent.message"]
    assert texts == ["from-b"], [e.type for e in events]
    kinds = [e.type for e in events]
    assert "session.status_rescheduled" in kinds
    log = _stored(dsn, schema, session_id)
    _check_log(log)
    assert not any(b"from-a" in data for _, _, _, data in log)


def _back_to_back(url: str, session_id: str, turns: int) -> None:
    """Send the next message the moment the previous turn ends, as a driving client does."""
    with _client(url) as sdk, sdk.beta.sessions.events.stream(session_id, timeout=90) as stream:
        sdk.beta.sessions.events.send(session_id, events=[user_message("0")])  # type: ignore[list-item]
        idles = 0
        for event in stream:
            if event.type == "session.status_idle":
                idles += 1
                if idles == turns:
                    return
                sdk.beta.sessions.events.send(session_id, events=[user_message(str(idles))])  # type: ignore[list-item]


def test_back_to_back_turns_never_wait_for_the_sweep(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """A message sent the moment a turn ends can reach the worker while it is still giving
    the lease back; that wake must start the next turn at once, not at the next sweep
    (set to a minute here, so a lost wake fails the test instead of slowing it). Many
    sessions at once make the lease's release slow enough for the race to happen."""
    dsn, schema = database
    script = Script(responder=lambda body: Reply(text="ok"))
    processes: list[SessiondProcess] = []
    with ThreadedServer(create_app(script)) as fake:
        env = {**_deployment_env(dsn, schema, fake.base_url, tmp_path), "SESSIOND_SWEEP_S": "60"}
        try:
            api = api_process(tmp_path, "api", env, "--no-engine")
            processes.append(api)
            processes.append(worker_process(tmp_path, "worker", env))
            with _client(api.url) as sdk:
                agent = sdk.beta.agents.create(name="quick", model="claude-sonnet-5-5")
                environment = sdk.beta.environments.create(name="e")
                ids = [
                    sdk.beta.sessions.create(agent=agent.id, environment_id=environment.id).id
                    for _ in range(24)
                ]
            started = time.monotonic()
            drivers = [
                threading.Thread(target=_back_to_back, args=(api.url, i, 5), daemon=True)
                for i in ids
            ]
            for driver in drivers:
                driver.start()
            for driver in drivers:
                driver.join(timeout=max(0.1, 45 - (time.monotonic() - started)))
            stuck = sum(driver.is_alive() for driver in drivers)
            assert stuck == 0, f"{stuck} sessions waited for the sweep"
        finally:
            for process in processes:
                process.stop()
    for session_id in ids:
        _check_log(_stored(dsn, schema, session_id))
