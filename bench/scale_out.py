"""Scale-out on PostgreSQL, beside SQLite in the same run (needs BENCH_POSTGRES_DSN or
TEST_POSTGRES_DSN; each deployment gets a schema of its own, dropped after).

* appends: `store.append` from 1,000 sessions, PostgreSQL against SQLite (in-process);
* SSE: append→receipt at 1,000 clients and 100 appends/s, two API processes on
  PostgreSQL (clients spread over both, appends through one) against one on SQLite;
* SSE capacity: the append rate is doubled until p99 append→receipt passes 50 ms (or a
  tenth of the frames go missing); the highest delivered rate that held, for bare
  sse-starlette, sessiond on SQLite, and two API processes on PostgreSQL;
* runs/s with 1, 2 and 4 worker processes behind one API process, also per worker
  CPU-second (on 2 cores more workers show the overhead, not a speed-up);
* the LangGraph comparison (peers.py) at concurrency 64 and 256, sessiond being one API
  process and two workers on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench.append import BODY
from bench.common import (
    ADMIN_KEY,
    ROOT,
    Figure,
    Results,
    Server,
    free_port,
    make_session,
    percentile,
)
from bench.peers import _LangGraph, _lg_runs, _sd_runs, _sessiond_providers, _venv
from bench.sse_fanout import STREAMS, BareServer, _load
from sessiond.store.clock import new_id, now_ts
from sessiond.store.postgres import PostgresStore
from sessiond.store.protocol import NewEvent, Record, Store
from sessiond.store.sqlite import SQLiteStore

CAPACITY_RATES = (100, 200, 400, 800, 1600, 3200)


def _posters(rate: float) -> int:
    """One posting loop (inside the load process) reaches ~400 appends/s; past that,
    posters run in a process of their own, which on 2 cores competes with the server
    and the clients (bench/README.md)."""
    return 1 if rate <= 400 else 4


def _dsn() -> str | None:
    return os.environ.get("BENCH_POSTGRES_DSN") or os.environ.get("TEST_POSTGRES_DSN")


async def _drop(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Deployment:
    """API processes (`serve --no-engine`) and workers on one fresh PostgreSQL schema."""

    def __init__(
        self,
        dsn: str,
        workdir: Path,
        *,
        apis: int = 1,
        workers: int = 0,
        providers: list[dict[str, Any]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.workdir = workdir
        self.apis, self.workers = apis, workers
        self.env = {
            **os.environ,
            "SESSIOND_DATABASE_URL": f"{dsn}?schema={self.schema}",
            "SESSIOND_API_KEY": ADMIN_KEY,
            "SESSIOND_WORKDIR_ROOT": str(workdir / "tools"),
            "SESSIOND_MAX_STREAMS_PER_KEY": "100000",
            "ANTHROPIC_API_KEY": "sk-fake",
        }
        if providers is not None:
            import json

            self.env["SESSIOND_PROVIDERS"] = json.dumps(providers)
        self.urls: list[str] = []
        self.worker_procs: list[subprocess.Popen[bytes]] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "sessiond.api.cli", *args],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        self._procs.append(proc)
        return proc

    def __enter__(self) -> Deployment:
        subprocess.run(
            [sys.executable, "-m", "sessiond.api.cli", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        for index in range(self.apis):
            port = free_port()
            self._spawn(f"api{index}", ["serve", "--no-engine", "--port", str(port)])
            self.urls.append(f"http://127.0.0.1:{port}")
        for index in range(self.workers):
            self.worker_procs.append(self._spawn(f"worker{index}", ["worker"]))
        deadline = time.monotonic() + 30
        for url in self.urls:
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not start; see {self.workdir}")
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        asyncio.run(_drop(self.dsn, self.schema))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.urls[0], headers={"x-api-key": ADMIN_KEY}, timeout=60)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the workers so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for proc in self.worker_procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total


# -- appends ------------------------------------------------------------------------------


async def _append_rate(store: Store, sessions: int, per_session: int) -> tuple[float, float]:
    await store.open()
    try:
        ids = []
        for _ in range(sessions):
            now = now_ts()
            record = Record(
                kind="bench", id=new_id("sesn"), workspace_id="w", data=b"{}",
                created_at=now, updated_at=now,
            )  # fmt: skip
            await store.create_stream(record)
            ids.append(record.id)
        latencies: list[float] = []
        event = [NewEvent(type="user.message", data=BODY)]

        async def writer(session_id: str) -> None:
            for _ in range(per_session):
                begun = time.perf_counter()
                await store.append(session_id, event, expected_seq=None)
                latencies.append(time.perf_counter() - begun)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for session_id in ids:
                tg.start_soon(writer, session_id)
        rate = sessions * per_session / (time.perf_counter() - started)
        return rate, percentile(latencies, 99) * 1000
    finally:
        await store.close()


def _appends(results: Results, dsn: str, quick: bool) -> None:
    sessions, per = 1000, 10 if quick else 40
    pg_rates, sqlite_rates, pg_p99 = [], [], []
    for _ in range(2):  # alternating rounds, medians (noisy machines)
        with tempfile.TemporaryDirectory() as tmp:
            rate, _p99 = anyio.run(
                _append_rate, SQLiteStore(str(Path(tmp) / "a.db")), sessions, per
            )
            sqlite_rates.append(rate)
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        try:
            rate, p99 = anyio.run(_append_rate, PostgresStore(dsn, schema=schema), sessions, per)
        finally:
            asyncio.run(_drop(dsn, schema))
        pg_rates.append(rate)
        pg_p99.append(p99)
    results.add(
        Figure(
            "scaleout",
            "store.append on PostgreSQL, 1,000 sessions",
            statistics.median(pg_rates),
            "events/s",
            params={"rounds": [round(r) for r in pg_rates], "p99_ms": pg_p99},
            baseline=statistics.median(sqlite_rates),
            baseline_name="SQLite store, same run",
        )
    )
    results.add(
        Figure("scaleout", "append latency p99 on PostgreSQL, 1,000 sessions",
               statistics.median(pg_p99), "ms")
    )  # fmt: skip


# -- SSE ----------------------------------------------------------------------------------


def _sse_latency(results: Results, dsn: str, quick: bool) -> None:
    seconds = 4.0 if quick else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        server._env["SESSIOND_RUN_ENGINE"] = "0"
        with server, server.client() as client:
            streams = [make_session(client) for _ in range(STREAMS)]
            sqlite = _load(server.url, "sessiond", streams, 1000, seconds)
        with Deployment(dsn, Path(tmp), apis=2) as pg, pg.client() as client:
            streams = [make_session(client) for _ in range(STREAMS)]
            two = _load(pg.urls[0], "sessiond", streams, 1000, seconds, client_urls=pg.urls)
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        results.add(
            Figure(
                "scaleout",
                f"append→receipt {label}, 1,000 clients, 2 API processes on PostgreSQL",
                two[key],
                "ms",
                params={"delivered_per_s": two["delivered_per_s"], "rate": 100},
                baseline=sqlite[key],
                baseline_name="1 process on SQLite",
            )
        )


def _ramp(load: Any) -> tuple[float, float, list[dict[str, Any]]]:
    """The highest delivered rate whose p99 stayed within 50 ms (and its append rate)."""
    best, best_rate, steps = 0.0, 0.0, []
    for rate in CAPACITY_RATES:
        got = load(rate)
        steps.append({"rate": rate, **{k: round(float(v), 1) for k, v in got.items()}})
        held = got["p99_ms"] <= 50 and got["received"] >= 0.9 * got["expected"]
        if not held:
            break
        best, best_rate = got["delivered_per_s"], rate
    return best, best_rate, steps


def _sse_capacity(results: Results, dsn: str, quick: bool) -> None:
    seconds = 3.0 if quick else 8.0
    clients = 1000
    with tempfile.TemporaryDirectory() as tmp, BareServer() as bare:
        names = [f"s{i}" for i in range(STREAMS)]
        bare_best, bare_rate, bare_steps = _ramp(
            lambda r: _load(bare.url, "bare", names, clients, seconds, rate=r, posters=_posters(r))
        )
        server = Server(Path(tmp))
        server._env["SESSIOND_RUN_ENGINE"] = "0"
        with server, server.client() as client:
            streams = [make_session(client) for _ in range(STREAMS)]
            sq_best, sq_rate, sq_steps = _ramp(
                lambda r: _load(server.url, "sessiond", streams, clients, seconds, rate=r,
                                posters=_posters(r))
            )  # fmt: skip
        with Deployment(dsn, Path(tmp), apis=2) as pg, pg.client() as client:
            streams = [make_session(client) for _ in range(STREAMS)]
            pg_best, pg_rate, pg_steps = _ramp(
                lambda r: _load(pg.urls[0], "sessiond", streams, clients, seconds, rate=r,
                                posters=_posters(r), client_urls=pg.urls)
            )  # fmt: skip
    for label, value, rate, steps in (
        ("sessiond on SQLite", sq_best, sq_rate, sq_steps),
        ("2 API processes on PostgreSQL", pg_best, pg_rate, pg_steps),
    ):
        results.add(
            Figure(
                "scaleout",
                f"SSE capacity at p99 ≤ 50 ms, 1,000 clients, {label}",
                value,
                "events/s",
                params={"append_rate": rate, "steps": steps, "bare_steps": bare_steps},
                baseline=bare_best,
                baseline_name=f"bare sse-starlette (at {bare_rate:g} appends/s)",
                target="≥ 0.5 × bare",
                met=value >= 0.5 * bare_best,
            )
        )


# -- runs ---------------------------------------------------------------------------------


def _runs_scaling(results: Results, dsn: str, quick: bool) -> None:
    runs = 256 if quick else 1024
    one: float | None = None
    for workers in (1, 2, 4):
        with (
            tempfile.TemporaryDirectory() as tmp,
            Deployment(
                dsn, Path(tmp), apis=1, workers=workers, providers=_sessiond_providers()
            ) as pg,
        ):
            before = pg.cpu_seconds()
            rate = asyncio.run(_sd_runs(pg.urls[0], 64, runs))
            cpu = pg.cpu_seconds() - before
        per_cpu = runs / cpu if cpu else float("nan")
        one = one or rate
        results.add(
            Figure(
                "scaleout",
                f"one-step runs/s, {workers} worker(s) on PostgreSQL, concurrency 64",
                rate,
                "runs/s",
                params={"runs_per_worker_cpu_s": round(per_cpu, 1), "worker_cpu_s": cpu},
                baseline=one if workers > 1 else None,
                baseline_name="1 worker" if workers > 1 else None,
                note=f"{per_cpu:.1f} runs per worker CPU-second",
            )
        )


def _langgraph(results: Results, dsn: str, quick: bool) -> None:
    keep = os.environ.get("BENCH_PEERS_DIR")
    home = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="sessiond-peers-"))
    home.mkdir(parents=True, exist_ok=True)
    runs = {64: 256 if quick else 1024, 256: 512 if quick else 2048}
    try:
        python = _venv(home, "langgraph", ["langgraph-cli[inmem]"])
        with tempfile.TemporaryDirectory() as tmp:
            with _LangGraph(python, Path(tmp)) as lg:
                theirs = {c: asyncio.run(_lg_runs(lg.url, c, n)) for c, n in runs.items()}
            with Deployment(
                dsn, Path(tmp), apis=1, workers=2, providers=_sessiond_providers()
            ) as pg:
                ours = {c: asyncio.run(_sd_runs(pg.urls[0], c, n)) for c, n in runs.items()}
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    for concurrency in runs:
        results.add(
            Figure(
                "scaleout",
                f"one-step runs/s, 1 API + 2 workers on PostgreSQL, concurrency {concurrency}",
                ours[concurrency],
                "runs/s",
                baseline=theirs[concurrency],
                baseline_name="langgraph dev (inmem)",
                target="≥ 10× LangGraph",
                met=ours[concurrency] >= 10 * theirs[concurrency],
            )
        )


def run(results: Results, *, quick: bool) -> None:
    dsn = _dsn()
    if not dsn:
        print("  skipped: set BENCH_POSTGRES_DSN (or TEST_POSTGRES_DSN)", flush=True)
        return
    for part in (_appends, _sse_latency, _sse_capacity, _runs_scaling, _langgraph):
        try:
            part(results, dsn, quick)
        except Exception as exc:  # one part failing must not hide the others
            print(f"  {part.__name__} failed: {type(exc).__name__}: {exc}", flush=True)
            results.meta.setdefault("failed", {})[f"scaleout{part.__name__}"] = str(exc)
