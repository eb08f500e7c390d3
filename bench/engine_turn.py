"""Engine overhead per turn: a turn with one tool call on an instant fake model, through
sessiond, against a bare loop that makes the same two SDK calls and runs the same tool."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anthropic
import httpx

from bench.common import ADMIN_KEY, ROOT, Figure, Results, Server, free_port, percentile
from bench.lean_http import LeanConnection, host_port, sessiond_turn

MODEL = "claude-sonnet-5-5"
TOOLS = [{"type": "agent_toolset_20260401"}]
BASH = {"name": "bash", "description": "run", "input_schema": {"type": "object"}}


async def _bare_turn(client: anthropic.AsyncAnthropic, messages: list) -> float:
    """One turn of a bare agent loop; `messages` carries the conversation across turns,
    as a session's log does, so both sides send the same growing history."""
    started = time.perf_counter()
    messages.append({"role": "user", "content": "go"})
    async with client.messages.stream(
        model=MODEL, max_tokens=100, messages=messages, tools=[BASH]
    ) as stream:
        first = await stream.get_final_message()
    call = next(b for b in first.content if b.type == "tool_use")
    proc = await asyncio.create_subprocess_exec("bash", "-c", call.input["command"])
    await proc.wait()
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}],
        },
    ]
    async with client.messages.stream(
        model=MODEL, max_tokens=100, messages=messages, tools=[BASH]
    ) as stream:
        final = await stream.get_final_message()
    messages.append({"role": "assistant", "content": [b.model_dump() for b in final.content]})
    return time.perf_counter() - started


async def _bare(fake_url: str, concurrency: int, turns: int) -> tuple[list[float], float]:
    async with anthropic.AsyncAnthropic(base_url=fake_url, api_key="x", max_retries=0) as client:
        times: list[float] = []

        async def loop() -> None:
            messages: list = []
            for _ in range(turns):
                times.append(await _bare_turn(client, messages))

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return times, time.perf_counter() - started


async def _sessiond_turn(http: httpx.AsyncClient, session_id: str) -> float:
    started = time.perf_counter()
    async with http.stream("GET", f"/v1/sessions/{session_id}/events/stream") as stream:
        body = {"events": [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]}
        (await http.post(f"/v1/sessions/{session_id}/events", json=body)).raise_for_status()
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "session.status_idle":
                if '"end_turn"' in line:
                    break
                raise RuntimeError(f"turn did not end well: {line[:300]}")
    return time.perf_counter() - started


async def _sessiond(url: str, concurrency: int, turns: int) -> tuple[list[float], float]:
    """Turns on `concurrency` sessions. Set-up and a warm-up turn go through httpx; the
    measured turns through `lean_http` (httpx used ~75% of a core at c=100 here, on the
    cores the server and the fake share)."""
    async with httpx.AsyncClient(
        base_url=url, headers={"x-api-key": ADMIN_KEY}, timeout=60
    ) as http:
        agent = (
            await http.post("/v1/agents", json={"name": "b", "model": MODEL, "tools": TOOLS})
        ).json()
        env = (await http.post("/v1/environments", json={"name": "b"})).json()
        sessions = [
            (
                await http.post(
                    "/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]}
                )
            ).json()["id"]
            for _ in range(concurrency)
        ]
        await _sessiond_turn(http, sessions[0])  # warm up
    host, port = host_port(url)
    headers = {"x-api-key": ADMIN_KEY}
    body = json.dumps(
        {"events": [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]}
    ).encode()
    times: list[float] = []

    async def loop(session_id: str) -> None:
        poster = await LeanConnection.open(host, port)
        try:
            for _ in range(turns):
                started = time.perf_counter()
                idle = await sessiond_turn(host, port, poster, session_id, body, headers)
                if b'"end_turn"' not in idle:
                    raise RuntimeError(f"turn did not end well: {idle[:300]!r}")
                times.append(time.perf_counter() - started)
        finally:
            await poster.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop(s) for s in sessions))
    return times, time.perf_counter() - started


def run(results: Results, *, quick: bool) -> None:
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "bench.fake_anthropic", str(port)], cwd=ROOT)
    fake_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{fake_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        provider = [
            {"name": "fake", "kind": "anthropic", "models": ["claude-*"], "base_url": fake_url}
        ]
        levels = ((1, 20 if quick else 100), (100, 2 if quick else 5))
        rounds = 3  # bare and sessiond alternate; medians of the rounds are reported
        with (
            tempfile.TemporaryDirectory() as tmp,
            Server(
                Path(tmp),
                providers=provider,
                # The engine's own overhead: its tool runs unsandboxed, like the bare loop's.
                # The sandbox's cost per call is its own bench (`--only sandbox`).
                env={"SESSIOND_SANDBOX": "off"},
            ) as srv,
        ):
            asyncio.run(_bare(fake_url, 1, 3))  # warm up
            for concurrency, turns in levels:
                bare_p50s, ours_p50s, bare_walls, ours_walls = [], [], [], []
                try:
                    for _ in range(rounds):
                        bare, bare_wall = asyncio.run(_bare(fake_url, concurrency, turns))
                        ours, ours_wall = asyncio.run(
                            asyncio.wait_for(_sessiond(srv.url, concurrency, turns), 120)
                        )
                        bare_p50s.append(percentile(bare, 50) * 1000)
                        ours_p50s.append(percentile(ours, 50) * 1000)
                        bare_walls.append(bare_wall / len(bare) * 1000)
                        ours_walls.append(ours_wall / len(ours) * 1000)
                except (TimeoutError, RuntimeError) as exc:
                    results.add(
                        Figure(
                            "engine",
                            f"turns at c={concurrency}",
                            float("nan"),
                            "ms",
                            params={"concurrency": concurrency},
                            note=f"failed: {type(exc).__name__}: {exc}"[:200],
                        )
                    )
                    continue
                median = statistics.median
                params = {
                    "concurrency": concurrency,
                    "turns_per_round": turns * concurrency,
                    "rounds": rounds,
                    "bare_p50_ms": bare_p50s,
                    "sessiond_p50_ms": ours_p50s,
                }
                if concurrency == 1:
                    overhead = median(o - b for o, b in zip(ours_p50s, bare_p50s, strict=True))
                    results.add(
                        Figure(
                            "engine",
                            "turn via sessiond, c=1, p50",
                            median(ours_p50s),
                            "ms",
                            params=params,
                            baseline=median(bare_p50s),
                            baseline_name="bare SDK loop",
                        )
                    )
                    results.add(
                        Figure(
                            "engine",
                            "overhead per turn, c=1 (p50 difference)",
                            overhead,
                            "ms",
                            params=params,
                            target="≤ 2 ms",
                            met=overhead <= 2,
                        )
                    )
                else:
                    ratio = median(o / b for o, b in zip(ours_walls, bare_walls, strict=True))
                    params["round_ratios"] = [
                        round(o / b, 3) for o, b in zip(ours_walls, bare_walls, strict=True)
                    ]
                    results.add(
                        Figure(
                            "engine",
                            f"wall time per turn, c={concurrency}",
                            median(ours_walls),
                            "ms",
                            params=params,
                            baseline=median(bare_walls),
                            baseline_name="bare SDK loop; ratio: median of the rounds'",
                            ratio=ratio,
                            target="≤ 1.3× bare",
                            met=ratio <= 1.3,
                        )
                    )
    finally:
        fake.terminate()
        fake.wait(timeout=10)
