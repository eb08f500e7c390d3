"""SSE fan-out: 100, 500 and 1,000 clients (a separate load process) tailing live sessions,
against a bare Starlette + sse-starlette server streaming the same payloads from memory."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ADMIN_KEY, ROOT, Figure, Results, Server, free_port, make_session

STREAMS = 10
RATE = 100.0  # appends per second, over all streams


def _load(
    url: str,
    mode: str,
    streams: list[str],
    clients: int,
    seconds: float,
    *,
    rate: float = RATE,
    posters: int = 1,
    client_urls: list[str] | None = None,
) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.sse_load",
            "--url",
            url,
            "--mode",
            mode,
            "--streams",
            ",".join(streams),
            "--key",
            ADMIN_KEY,
            "--clients",
            str(clients),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--posters",
            str(posters),
            "--client-urls",
            ",".join(client_urls or []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class BareServer:
    def __enter__(self) -> BareServer:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_sse", str(self.port)], cwd=ROOT
        )
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("bare server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run(results: Results, *, quick: bool) -> None:
    seconds = 4.0 if quick else 12.0
    counts = (100, 500, 1000)
    median = statistics.median
    with BareServer() as bare_server, tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        server._env["SESSIOND_RUN_ENGINE"] = "0"  # the log alone: nothing answers the messages
        with server, server.client() as client:
            streams = [make_session(client) for _ in range(STREAMS)]
            for clients in counts:
                # At the target's 1,000 clients, bare and sessiond alternate over three
                # rounds and medians are reported (this is the noisiest figure here).
                rounds = 3 if clients == 1000 else 1
                bares, ours = [], []
                for _ in range(rounds):
                    bare_streams = [f"s{i}" for i in range(STREAMS)]
                    bares.append(_load(bare_server.url, "bare", bare_streams, clients, seconds))
                    ours.append(_load(server.url, "sessiond", streams, clients, seconds))
                keys = ("delivered_per_s", "p50_ms", "p99_ms")
                got = {k: median(r[k] for r in ours) for k in keys}
                base = {k: median(r[k] for r in bares) for k in keys}
                got.update({k: ours[-1][k] for k in ("sent", "received", "expected")})
                params = {
                    "clients": clients,
                    "streams": STREAMS,
                    "append_rate": RATE,
                    "seconds": seconds,
                    "sent": got["sent"],
                    "received": got["received"],
                    "expected": got["expected"],
                    "rounds": rounds,
                    "rounds_p99_ms": [round(r["p99_ms"], 1) for r in ours],
                    "rounds_bare_p99_ms": [round(r["p99_ms"], 1) for r in bares],
                }
                results.add(
                    Figure(
                        "sse",
                        f"delivered, {clients} clients",
                        got["delivered_per_s"],
                        "events/s",
                        params=params,
                        baseline=base["delivered_per_s"],
                        baseline_name="bare sse-starlette",
                        target="≥ 0.5 × bare" if clients == 1000 else None,
                        met=(got["delivered_per_s"] >= 0.5 * base["delivered_per_s"])
                        if clients == 1000
                        else None,
                    )
                )
                results.add(
                    Figure(
                        "sse",
                        f"append→receipt p50, {clients} clients",
                        got["p50_ms"],
                        "ms",
                        baseline=base["p50_ms"],
                        baseline_name="bare",
                    )
                )
                results.add(
                    Figure(
                        "sse",
                        f"append→receipt p99, {clients} clients",
                        got["p99_ms"],
                        "ms",
                        baseline=base["p99_ms"],
                        baseline_name="bare",
                        target="≤ 50 ms" if clients == 1000 else None,
                        met=got["p99_ms"] <= 50 if clients == 1000 else None,
                    )
                )
