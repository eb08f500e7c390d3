"""Real sessiond processes for tests: `sessiond serve` and `sessiond worker`, each its own
process on a shared database, their output in a log file the test can read."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KEY = "sk-process-test"


class SessiondProcess:
    """One `sessiond …` process; `url` is set for servers once they listen."""

    def __init__(self, log_dir: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.url = ""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sessiond.api.cli", *args],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        """Until the log shows `pattern` (a child's log file: there is nothing to wait on,
        so it is polled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: never printed {pattern!r}:\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()


def sessiond_env(
    database_url: str, work_root: Path, providers: list[dict[str, Any]], **extra: str
) -> dict[str, str]:
    """The environment every process of one deployment shares."""
    return {
        "SESSIOND_DATABASE_URL": database_url,
        "SESSIOND_API_KEY": KEY,
        "SESSIOND_PROVIDERS": json.dumps(providers),
        "SESSIOND_WORKDIR_ROOT": str(work_root),
        **extra,
    }


def api_process(log_dir: Path, name: str, env: dict[str, str], *flags: str) -> SessiondProcess:
    """`sessiond serve --port 0 [flags]`, its URL read from its log."""
    process = SessiondProcess(log_dir, name, ["serve", "--port", "0", *flags], env)
    process.url = process.wait_for(r"listening on (http://\S+)").group(1)
    return process


def worker_process(log_dir: Path, name: str, env: dict[str, str]) -> SessiondProcess:
    """`sessiond worker`, once it drives."""
    process = SessiondProcess(log_dir, name, ["worker"], env)
    process.wait_for(r"worker driving")
    return process
