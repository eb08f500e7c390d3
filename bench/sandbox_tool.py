"""The sandbox's added latency per tool call: `bash true` through `run_tool` in a
`SandboxPlace` (bubblewrap, prlimit, nice, setpriv as root) with no network and with
slirp4netns, against the same call through `HostPlace` (a bare subprocess on the host).

The three are measured in alternating rounds in one process; each figure is the median of
the rounds' medians, with the p95 over every call, and the ratio is the median of the
rounds' ratios to the bare call."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import Figure, Results, percentile
from sessiond.runtime.sandbox.bwrap import (
    Assets,
    Network,
    SandboxPlace,
    detect,
    prepare_workdir,
    session_uid,
)
from sessiond.runtime.tools.toolset import HostPlace, Place, ToolLimits, run_tool

BASH_TRUE = {"command": "true"}
ROUNDS = 5
MODES = ("bare", "none", "slirp")
NAMES = {
    "bare": "bash `true`, bare subprocess (HostPlace)",
    "none": "bash `true` in the sandbox, no network",
    "slirp": "bash `true` in the sandbox, slirp4netns",
}


async def _calls(place: Place, limits: ToolLimits, n: int) -> list[float]:
    """`n` calls one after another; each one's latency in ms."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        outcome = await run_tool("bash", BASH_TRUE, limits=limits, place=place)
        times.append((time.perf_counter() - started) * 1000)
        if outcome.is_error:
            raise RuntimeError(f"bash true failed: {outcome.text[:300]}")
    return times


async def _measure(root: Path, per_round: int) -> dict[str, list[list[float]]]:
    """Every mode's latencies, round by round."""
    host = detect()
    if not host.available:
        raise RuntimeError(f"no sandbox on this host: {host.missing}")
    limits = ToolLimits()
    assets = Assets(root / ".sandbox" / "etc")
    assets.write()
    uid = session_uid(host, "bench-sandbox")
    sandboxed = root / "sandboxed"
    prepare_workdir(sandboxed, uid)
    places: dict[str, Place] = {
        "bare": HostPlace(root / "bare", disk_floor_bytes=limits.disk_floor_bytes),
        **{
            mode: SandboxPlace(
                host,
                assets,
                sandboxed,
                uid=uid,
                network=Network(mode="slirp" if mode == "slirp" else "none"),
                layer=None,
                limits=limits,
            )
            for mode in ("none", "slirp")
        },
    }
    (root / "bare").mkdir()
    for mode in MODES:  # warm up: page cache, the thread pool
        await _calls(places[mode], limits, 5)
    rounds: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    for _ in range(ROUNDS):
        for mode in MODES:
            rounds[mode].append(await _calls(places[mode], limits, per_round))
    return rounds


def run(results: Results, *, quick: bool) -> None:
    per_round = 40 if quick else 200
    params: dict[str, object] = {"calls": per_round * ROUNDS, "rounds": ROUNDS}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
            rounds = asyncio.run(_measure(Path(tmp), per_round))
    except RuntimeError as exc:
        results.add(
            Figure("sandbox", NAMES["none"], float("nan"), "ms", params=params, note=str(exc))
        )
        return
    median = statistics.median
    p50s = {mode: [median(r) for r in rounds[mode]] for mode in MODES}
    p95s = {mode: percentile([t for r in rounds[mode] for t in r], 95) for mode in MODES}
    results.add(
        Figure(
            "sandbox",
            f"{NAMES['bare']}, p50",
            median(p50s["bare"]),
            "ms",
            params={**params, "round_p50_ms": _rounded(p50s["bare"])},
        )
    )
    results.add(Figure("sandbox", f"{NAMES['bare']}, p95", p95s["bare"], "ms", params=params))
    for mode in ("none", "slirp"):
        ratios = [s / b for s, b in zip(p50s[mode], p50s["bare"], strict=True)]
        results.add(
            Figure(
                "sandbox",
                f"{NAMES[mode]}, p50",
                median(p50s[mode]),
                "ms",
                params={
                    **params,
                    "round_p50_ms": _rounded(p50s[mode]),
                    "round_ratios": _rounded(ratios),
                },
                baseline=median(p50s["bare"]),
                baseline_name="bare subprocess; ratio: median of the rounds'",
                ratio=median(ratios),
            )
        )
        results.add(
            Figure(
                "sandbox",
                f"{NAMES[mode]}, p95",
                p95s[mode],
                "ms",
                params=params,
                baseline=p95s["bare"],
                baseline_name="bare subprocess",
            )
        )


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]
