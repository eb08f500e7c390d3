"""Peers, side by side on the same work (`python -m bench --peers` or `--only peers`).

Each peer is installed into its own virtual environment under a temporary directory
(set BENCH_PEERS_DIR to keep and reuse them between runs) and driven over loopback:

- LangGraph's local server (`langgraph dev`, in-memory runtime, started offline) serving a
  one-step agent on LangChain's fake chat model, against sessiond serving a one-step agent
  on its scripted model with the same 40-word answer: runs per second at concurrency 1
  and 64, time to the first streamed event and to the first model output, and whether
  resuming a stream after any of its events loses or repeats events.
- The `eventsourcing` package's SQLite aggregate recorder, one commit per event (as its
  docs use it) at the same `synchronous` setting as sessiond's store: appends per second
  to 1 and to 1,000 aggregates, and a catch-up read after a version, against sessiond's
  store appending one event per call from 1 and from 1,000 concurrent sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench import append as append_bench
from bench.common import ADMIN_KEY, ROOT, Figure, Results, Server, free_port, percentile
from bench.lean_http import LeanConnection, host_port, sessiond_turn
from sessiond.store.clock import new_id, now_ts
from sessiond.store.protocol import EventQuery, NewEvent, Record
from sessiond.store.sqlite import SQLiteStore

SCRIPTS = ROOT / "bench" / "peer_scripts"
REPLY = " ".join(f"word{i}" for i in range(40))  # the same answer on both sides
LANGGRAPH_ENV = {
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
}
JOBS_PER_WORKER = 64


# -- virtual environments --------------------------------------------------------------


def _venv(home: Path, name: str, packages: list[str]) -> Path:
    """A virtual environment with `packages`, made once under `home`; its python."""
    path = home / name
    python = path / "bin" / "python"
    marker = path / ".installed"
    if marker.exists() and marker.read_text() == json.dumps(packages):
        return python
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
        check=True,
    )
    marker.write_text(json.dumps(packages))
    return python


# -- SSE over httpx -------------------------------------------------------------------


def _frames(lines: list[str]) -> list[dict[str, str]]:
    frames: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if current:
                frames.append(current)
                current = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        current[key] = value[1:] if value.startswith(" ") else value
    if current:
        frames.append(current)
    return frames


def _loss(full: list[tuple[str, ...]], got: list[tuple[str, ...]]) -> tuple[int, int]:
    """(lost, duplicated) of `got` against `full`, as multisets of whole frames."""
    want, have = Counter(full), Counter(got)
    return sum((want - have).values()), sum((have - want).values())


# -- LangGraph --------------------------------------------------------------------------


class _LangGraph:
    """`langgraph dev` on a temporary project holding the one-step agent."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        project = workdir / "lgproject"
        project.mkdir(parents=True, exist_ok=True)
        shutil.copy(SCRIPTS / "langgraph_agent.py", project / "agent.py")
        (project / "langgraph.json").write_text(
            json.dumps({"dependencies": ["."], "graphs": {"agent": "./agent.py:graph"}})
        )
        self.project = project
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _LangGraph:
        cli = self.python.parent / "langgraph"
        log = open(self.project / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(cli),
                "dev",
                "--port",
                str(self.port),
                "--no-browser",
                "--no-reload",
                "--n-jobs-per-worker",
                str(JOBS_PER_WORKER),
            ],
            cwd=self.project,
            env={**os.environ, **LANGGRAPH_ENV},
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"langgraph dev did not start; see {self.project / 'server.log'}")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _lg_input() -> dict[str, Any]:
    return {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": "hi"}]}}


async def _lg_runs(url: str, concurrency: int, runs: int) -> float:
    """Runs per second: each worker runs `runs / concurrency` runs on its own thread, one
    `POST /threads/{id}/runs/wait` each, on its own keep-alive connection."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        threads = [
            (await http.post("/threads", json={})).json()["thread_id"] for _ in range(concurrency)
        ]
        await http.post(f"/threads/{threads[0]}/runs/wait", json=_lg_input())  # warm up
    host, port = host_port(url)
    body = json.dumps(_lg_input()).encode()

    async def worker(thread_id: str, n: int) -> None:
        connection = await LeanConnection.open(host, port)
        try:
            for _ in range(n):
                status, _ = await connection.request(
                    "POST", f"/threads/{thread_id}/runs/wait", body
                )
                if status != 200:
                    raise RuntimeError(f"langgraph run: HTTP {status}")
        finally:
            await connection.close()

    per = max(1, runs // concurrency)
    started = time.perf_counter()
    await asyncio.gather(*(worker(t, per) for t in threads))
    return per * concurrency / (time.perf_counter() - started)


async def _lg_first_event(url: str, samples: int) -> tuple[list[float], list[float]]:
    """Time from the request to the first SSE frame, and to the first model output."""
    first: list[float] = []
    output: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        thread_id = (await http.post("/threads", json={})).json()["thread_id"]
        body = {**_lg_input(), "stream_mode": ["messages-tuple"]}
        for _ in range(samples):
            started = time.perf_counter()
            seen_first = None
            async with http.stream("POST", f"/threads/{thread_id}/runs/stream", json=body) as s:
                event = ""
                async for line in s.aiter_lines():
                    if seen_first is None and line:
                        seen_first = time.perf_counter() - started
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "messages":
                        output.append(time.perf_counter() - started)
                        break
            if seen_first is not None:
                first.append(seen_first)
    return first, output


def _lg_resume(url: str) -> dict[str, Any]:
    """One resumable run; then, for every event of it, resume after that event's id and
    compare what comes with the rest of the run (lost and repeated frames)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        body = {**_lg_input(), "stream_mode": ["messages-tuple"], "stream_resumable": True}
        with http.stream("POST", f"/threads/{thread_id}/runs/stream", json=body) as s:
            run_id = s.headers["content-location"].rstrip("/").split("/")[-1]
            live = _frames(list(s.iter_lines()))
        path = f"/threads/{thread_id}/runs/{run_id}/stream"
        full = [
            (f.get("id", ""), f.get("event", ""), f.get("data", ""))
            for f in _frames(list(http.get(path, headers={"Last-Event-ID": "0"}).iter_lines()))
        ]
        ids = [f[0] for f in full]
        lost = duplicated = cuts_with_error = 0
        for k in range(1, len(full)):
            with http.stream("GET", path, headers={"Last-Event-ID": full[k - 1][0]}) as s:
                rest = [
                    (f.get("id", ""), f.get("event", ""), f.get("data", ""))
                    for f in _frames(list(s.iter_lines()))
                ]
            lo, du = _loss(full[k:], rest)
            lost += lo
            duplicated += du
            cuts_with_error += bool(lo or du)
        mid = len(full) // 2
        with http.stream("GET", path, headers={"Last-Event-ID": full[mid - 1][0]}) as s:
            rest = [
                (f.get("id", ""), f.get("event", ""), f.get("data", ""))
                for f in _frames(list(s.iter_lines()))
            ]
        mid_lost, mid_dup = _loss(full[mid:], rest)
    return {
        "events": len(full),
        "live_events": len(live),
        "distinct_ids": len(set(ids)),
        "cuts": len(full) - 1,
        "cuts_with_loss_or_repeat": cuts_with_error,
        "lost": lost,
        "repeated": duplicated,
        "midpoint_lost": mid_lost,
        "midpoint_repeated": mid_dup,
    }


# -- sessiond, the same work ------------------------------------------------------------


def _sessiond_providers() -> list[dict[str, Any]]:
    return [{"name": "fake", "kind": "scripted", "models": ["fake-*"], "script": [{"text": REPLY}]}]


async def _sd_sessions(http: httpx.AsyncClient, n: int) -> list[str]:
    agent = (await http.post("/v1/agents", json={"name": "peer", "model": "fake-one"})).json()
    env = (await http.post("/v1/environments", json={"name": "peer"})).json()
    body = {"agent": agent["id"], "environment_id": env["id"]}
    return [(await http.post("/v1/sessions", json=body)).json()["id"] for _ in range(n)]


_USER = {"events": [{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]}


async def _sd_turn(http: httpx.AsyncClient, session_id: str) -> tuple[float, float, float]:
    """One run: (total, to the first frame, to the first model output), in seconds."""
    started = time.perf_counter()
    first = output = 0.0
    async with http.stream("GET", f"/v1/sessions/{session_id}/events/stream") as stream:
        (await http.post(f"/v1/sessions/{session_id}/events", json=_USER)).raise_for_status()
        event = ""
        async for line in stream.aiter_lines():
            if not first and line:
                first = time.perf_counter() - started
            if line.startswith("event: "):
                event = line[7:]
                if event == "agent.message" and not output:
                    output = time.perf_counter() - started
            elif line.startswith("data: ") and event == "session.status_idle":
                break
    return time.perf_counter() - started, first, output


async def _sd_runs(url: str, concurrency: int, runs: int) -> float:
    """Runs per second: each worker runs on its own session; a run opens the session's
    stream, posts a user message (on a keep-alive connection) and reads to idle."""
    headers = {"x-api-key": ADMIN_KEY}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        sessions = await _sd_sessions(http, concurrency)
        await _sd_turn(http, sessions[0])  # warm up
    host, port = host_port(url)
    body = json.dumps(_USER).encode()
    per = max(1, runs // concurrency)

    async def worker(session_id: str) -> None:
        poster = await LeanConnection.open(host, port)
        try:
            for _ in range(per):
                await sessiond_turn(host, port, poster, session_id, body, headers)
        finally:
            await poster.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in sessions))
    return per * concurrency / (time.perf_counter() - started)


async def _sd_first_event(url: str, samples: int) -> tuple[list[float], list[float]]:
    headers = {"x-api-key": ADMIN_KEY}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        (session_id,) = await _sd_sessions(http, 1)
        await _sd_turn(http, session_id)  # warm up
        first, output = [], []
        for _ in range(samples):
            _, f, o = await _sd_turn(http, session_id)
            first.append(f)
            output.append(o)
        return first, output


def _sd_resume(url: str, turns: int) -> dict[str, Any]:
    """A session of `turns` runs; then resume after each of its events (Last-Event-ID)
    and compare what comes with the rest of the log."""
    headers = {"x-api-key": ADMIN_KEY}

    async def make() -> str:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            (session_id,) = await _sd_sessions(http, 1)
            for _ in range(turns):
                await _sd_turn(http, session_id)
            return session_id

    session_id = asyncio.run(make())
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        listed = http.get(f"/v1/sessions/{session_id}/events", params={"limit": 1000}).json()
        full = [(e["id"], e["type"]) for e in listed["data"]]
        lost = duplicated = cuts_with_error = 0
        mid_lost = mid_dup = 0
        for k in range(1, len(full)):
            rest: list[tuple[str, str]] = []
            want = len(full) - k
            with http.stream(
                "GET",
                f"/v1/sessions/{session_id}/events/stream",
                headers={"Last-Event-ID": full[k - 1][0]},
            ) as s:
                # A live tail never ends by itself: stop at the log's end as listed.
                lines: list[str] = []
                for line in s.iter_lines():
                    lines.append(line)
                    if not line:
                        rest = [(f["id"], f["event"]) for f in _frames(lines) if "id" in f]
                        if len(rest) >= want:
                            break
            lo, du = _loss(full[k:], rest)
            lost += lo
            duplicated += du
            cuts_with_error += bool(lo or du)
            if k == len(full) // 2:
                mid_lost, mid_dup = lo, du
    return {
        "events": len(full),
        "distinct_ids": len({i for i, _ in full}),
        "cuts": len(full) - 1,
        "cuts_with_loss_or_repeat": cuts_with_error,
        "lost": lost,
        "repeated": duplicated,
        "midpoint_lost": mid_lost,
        "midpoint_repeated": mid_dup,
    }


# -- eventsourcing ----------------------------------------------------------------------


async def _sd_catch_up(path: Path) -> list[float]:
    """sessiond's catch-up read: a 1,000-event session read after its 500th event."""
    store = SQLiteStore(str(path))
    await store.open()
    try:
        now = now_ts()
        record = Record(
            kind="bench",
            id=new_id("sesn"),
            workspace_id="ws",
            data=b"{}",
            created_at=now,
            updated_at=now,
        )
        await store.create_stream(record)
        event = NewEvent(type="user.message", data=append_bench.BODY)
        for _ in range(10):
            await store.append(record.id, [event] * 100, expected_seq=None)
        times = []
        for _ in range(200):
            started = time.perf_counter()
            got = await store.read(record.id, EventQuery(after_seq=500))
            times.append(time.perf_counter() - started)
            assert len(got) == 500
        return times
    finally:
        await store.close()


def _eventsourcing(results: Results, home: Path, workdir: Path, quick: bool) -> None:
    python = _venv(home, "eventsourcing", ["eventsourcing"])
    out = subprocess.run(
        [str(python), str(SCRIPTS / "eventsourcing_recorder.py"), str(workdir / "es.db"), "1000"],
        check=True,
        capture_output=True,
        text=True,
    )
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    sync = peer["synchronous"]
    if sync != "FULL":
        results.add(Figure("peers", "eventsourcing synchronous", 0, "", note=f"peer ran at {sync}"))
    one_rate, _ = anyio.run(append_bench._store_run, workdir / "sd1.db", 1, 1000 if quick else 2000)
    many_rate, _ = anyio.run(
        append_bench._store_run, workdir / "sd1000.db", 1000, 5 if quick else 10
    )
    for label, ours, theirs, target in (
        ("1 session / aggregate", one_rate, peer["appends_per_s_1"], None),
        (
            "1,000 sessions / aggregates",
            many_rate,
            peer["appends_per_s_many"],
            "≥ 5× eventsourcing",
        ),
    ):
        results.add(
            Figure(
                "peers",
                f"appends/s, one event each, {label}",
                ours,
                "events/s",
                params={"synchronous": "FULL", "peer_journal_mode": peer["journal_mode"]},
                baseline=theirs,
                baseline_name="eventsourcing SQLite recorder",
                target=target,
                met=(ours >= 5 * theirs) if target else None,
            )
        )
    catch_up = asyncio.run(_sd_catch_up(workdir / "catchup.db"))
    results.add(
        Figure(
            "peers",
            "catch-up read after version 500 of 1,000, p50",
            percentile(catch_up, 50) * 1000,
            "ms",
            baseline=peer["catch_up_p50_ms"],
            baseline_name="eventsourcing select_events(gt=500)",
        )
    )


def _langgraph(results: Results, home: Path, workdir: Path, quick: bool) -> None:
    python = _venv(home, "langgraph", ["langgraph-cli[inmem]"])
    runs = {1: 40 if quick else 200, 64: 256 if quick else 1024}
    samples = 20 if quick else 100
    with _LangGraph(python, workdir) as lg:
        theirs = {c: asyncio.run(_lg_runs(lg.url, c, n)) for c, n in runs.items()}
        lg_first, lg_output = asyncio.run(_lg_first_event(lg.url, samples))
        lg_resume = _lg_resume(lg.url)
    (workdir / "sessiond").mkdir()
    with Server(workdir / "sessiond", providers=_sessiond_providers()) as srv:
        ours = {c: asyncio.run(_sd_runs(srv.url, c, n)) for c, n in runs.items()}
        sd_first, sd_output = asyncio.run(_sd_first_event(srv.url, samples))
        sd_resume = _sd_resume(srv.url, 8)
    for concurrency in runs:
        target = "≥ 10× LangGraph" if concurrency == 64 else None
        results.add(
            Figure(
                "peers",
                f"one-step runs/s, concurrency {concurrency}",
                ours[concurrency],
                "runs/s",
                params={"n_jobs_per_worker": JOBS_PER_WORKER},
                baseline=theirs[concurrency],
                baseline_name="langgraph dev (inmem)",
                target=target,
                met=(ours[concurrency] >= 10 * theirs[concurrency]) if target else None,
            )
        )
    ours_first, theirs_first = percentile(sd_first, 50) * 1000, percentile(lg_first, 50) * 1000
    results.add(
        Figure(
            "peers",
            "time to first streamed event, p50",
            ours_first,
            "ms",
            baseline=theirs_first,
            baseline_name="langgraph dev",
            target="≥ 20× faster",
            met=ours_first * 20 <= theirs_first,
        )
    )
    results.add(
        Figure(
            "peers",
            "time to first model output, p50",
            percentile(sd_output, 50) * 1000,
            "ms",
            baseline=percentile(lg_output, 50) * 1000,
            baseline_name="langgraph dev",
        )
    )
    for name, outcome in (("sessiond", sd_resume), ("langgraph dev", lg_resume)):
        results.add(
            Figure(
                "peers",
                f"resume after each event: lost + repeated, {name}",
                outcome["lost"] + outcome["repeated"],
                "events",
                params=outcome,
                target="0" if name == "sessiond" else None,
                met=(outcome["lost"] + outcome["repeated"] == 0) if name == "sessiond" else None,
                note=(
                    f"{outcome['cuts_with_loss_or_repeat']} of {outcome['cuts']} cut points "
                    f"lose or repeat; {outcome['distinct_ids']} distinct ids "
                    f"for {outcome['events']} events"
                ),
            )
        )


def run(results: Results, *, quick: bool) -> None:
    keep = os.environ.get("BENCH_PEERS_DIR")
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="sessiond-peers-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, bench in (("eventsourcing", _eventsourcing), ("langgraph", _langgraph)):
                workdir = Path(tmp) / name
                workdir.mkdir()
                try:
                    bench(results, home, workdir, quick)
                except Exception as exc:  # one peer failing must not hide the other
                    results.add(
                        Figure(
                            "peers",
                            f"{name}",
                            float("nan"),
                            "",
                            note=f"failed: {type(exc).__name__}: {exc}"[:300],
                        )
                    )
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
