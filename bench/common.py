"""Shared pieces: figures (value, baseline, ratio, target), a server subprocess, RSS."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY = "sk-bench-admin"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One measured number, with its baseline from the same run and its target."""

    bench: str
    name: str
    value: float
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str | None = None

    def line(self) -> str:
        text = f"  {self.name:<52} {self.value:>12,.2f} {self.unit}"
        if self.baseline is not None:
            text += (
                f"   baseline {self.baseline:,.2f} ({self.baseline_name}), ratio {self.ratio:.3f}"
            )
        if self.target:
            mark = {True: "MET", False: "MISSED", None: "n/a"}[self.met]
            text += f"   target {self.target}: {mark}"
        if self.note:
            text += f"   [{self.note}]"
        return text


class Results:
    """Collects figures, prints them as they come, writes JSON."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.meta: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
        }

    def add(self, figure: Figure) -> Figure:
        if figure.baseline not in (None, 0) and figure.ratio is None:
            figure.ratio = figure.value / figure.baseline  # type: ignore[operator]
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"meta": self.meta, "figures": [asdict(f) for f in self.figures]}
        path.write_text(json.dumps(body, indent=1) + "\n")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Server:
    """`sessiond serve` in its own process, on a fresh SQLite file."""

    def __init__(
        self,
        workdir: Path,
        *,
        providers: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        settings = {
            **os.environ,
            "SESSIOND_DATABASE_URL": f"sqlite:///{workdir / 'sessiond.db'}",
            "SESSIOND_DATA_DIR": str(workdir),
            "SESSIOND_WORKDIR_ROOT": str(workdir.with_name(workdir.name + "-tools")),
            # The load generators hold thousands of streams with the one admin key.
            "SESSIOND_MAX_STREAMS_PER_KEY": "100000",
            "SESSIOND_API_KEY": ADMIN_KEY,
            "ANTHROPIC_API_KEY": "sk-fake",
        }
        if providers is not None:
            settings["SESSIOND_PROVIDERS"] = json.dumps(providers)
        self._env = {**settings, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessiond.api.cli", "serve", "--port", str(self.port)],
            env=self._env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start; see {self.workdir / 'server.log'}")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-api-key": ADMIN_KEY}, timeout=60)


def make_session(client: httpx.Client, *, model: str = "scripted-echo", tools: Any = None) -> str:
    """An agent, an environment and a session, over HTTP."""
    body: dict[str, Any] = {"name": "bench", "model": model}
    if tools is not None:
        body["tools"] = tools
    agent = client.post("/v1/agents", json=body).json()
    env = client.post("/v1/environments", json={"name": "bench"}).json()
    session = client.post(
        "/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]}
    ).json()
    return str(session["id"])
