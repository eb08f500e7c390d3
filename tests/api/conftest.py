"""A real sessiond under uvicorn on 127.0.0.1 (port 0), and real `anthropic` SDK clients.

The server runs in a thread with its own event loop, as httpx's own test suite runs its
test app, so synchronous SDK clients can drive it over real HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anthropic
import anyio
import httpx
import pytest

from sessiond.api.app import create_app
from sessiond.api.config import Config
from sessiond.api.serve import bind, build_server

ADMIN_KEY = "sk-test-admin-key"


class RunningServer:
    """A live server: its base URL, its config, and how to stop it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sock = bind("127.0.0.1", 0)
        self.app = create_app(config)
        self.server = build_server(self.app, self.sock)
        host, port = self.sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        anyio.run(self.server.serve, [self.sock])

    def start(self) -> None:
        self._thread.start()
        with httpx.Client(base_url=self.base_url) as client:
            for _ in range(500):
                if self.server.started:
                    break
                threading.Event().wait(0.01)
            else:
                raise RuntimeError("server did not start")
            assert client.get("/health").json() == {"ok": True}

    def stop(self) -> None:
        self.app.state.draining.set()
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self.sock.close()


def make_config(tmp_path: Path, **overrides: object) -> Config:
    """A config on a fresh SQLite file."""
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'sessiond.db'}",
        "admin_api_key": ADMIN_KEY,
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server per test module (tests use their own agents/sessions, so they don't collide)."""
    running = RunningServer(make_config(tmp_path_factory.mktemp("server")))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    """The real SDK, pointed at our server with the admin key; no SDK retries."""
    with anthropic.Anthropic(base_url=server.base_url, api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk
