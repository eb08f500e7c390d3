"""Eval throughput: cases per second with the instant in-process scripted model, at
concurrency 1 and 16 (every case is a real session: create, send, run, score)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Figure, Results, Server


def _run(client, agent_id: str, cases: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    suite = {
        "cases": [
            {
                "id": f"c{i}",
                "input": f"hello {i}",
                "scorers": [{"type": "contains", "value": f"hello {i}"}],
            }
            for i in range(cases)
        ]
    }
    run = client.post(
        "/v1/evals", json={"suite": suite, "agent_id": agent_id, "concurrency": concurrency}
    ).json()
    started = time.perf_counter()
    while True:
        got = client.get(f"/v1/evals/{run['id']}").json()
        if got["status"] != "running":
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if got["counts"]["passed"] != cases:
        raise RuntimeError(f"eval run did not pass every case: {got['counts']}")
    return cases / elapsed


def run(results: Results, *, quick: bool) -> None:
    cases = 50 if quick else 200
    with tempfile.TemporaryDirectory() as tmp, Server(Path(tmp)) as server:
        with server.client() as client:
            agent = client.post("/v1/agents", json={"name": "e", "model": "scripted-echo"}).json()
            _run(client, agent["id"], 5, 1)  # warm up
            rates = {c: _run(client, agent["id"], cases, c) for c in (1, 16)}
    for concurrency, rate in rates.items():
        results.add(
            Figure(
                "evals",
                f"eval cases per second, concurrency {concurrency}",
                rate,
                "cases/s",
                params={"cases": cases, "model": "scripted (instant)"},
                baseline=rates[1] if concurrency != 1 else None,
                baseline_name="concurrency 1" if concurrency != 1 else None,
            )
        )
