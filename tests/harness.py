"""Test harness: a real sessiond under uvicorn on 127.0.0.1 (port 0), and SDK helpers.

The server runs in a thread with its own event loop, as httpx's own test suite runs its
test app, so synchronous SDK clients can drive it over real HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anthropic
import anyio
import httpx

from sessiond.api.app import create_app
from sessiond.api.config import Config
from sessiond.api.serve import bind, build_server
from sessiond.runtime.providers.resilience import RetryPolicy

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
        anyio.run(self._main)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve([self.sock])

    def drain(self) -> None:
        """Tell live streams the server is draining (from the test's thread, safely)."""
        self.loop.call_soon_threadsafe(self.app.state.draining.set)

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
        self.drain()
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self.sock.close()


def make_config(tmp_path: Path, **overrides: object) -> Config:
    """A config on a fresh SQLite file."""
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'data' / 'sessiond.db'}",
        "admin_api_key": ADMIN_KEY,
        "max_body_bytes": 256 * 1024,
        "workdir_root": str(tmp_path / "work"),
        "retry": RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05, jitter_s=0.01),
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


def make_agent(client: anthropic.Anthropic, **overrides: object) -> object:
    """A minimal agent through the SDK."""
    params: dict[str, object] = {"name": "tester", "model": "claude-sonnet-5-5"}
    params.update(overrides)
    return client.beta.agents.create(**params)  # type: ignore[arg-type]


def make_session(client: anthropic.Anthropic, **overrides: object) -> object:
    """An agent, an environment and a session on them."""
    agent = make_agent(client)
    environment = client.beta.environments.create(name="env")
    params: dict[str, object] = {"agent": agent.id, "environment_id": environment.id}  # type: ignore[attr-defined]
    params.update(overrides)
    return client.beta.sessions.create(**params)  # type: ignore[arg-type]


def user_message(text: str) -> dict[str, object]:
    """A `user.message` event param."""
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}
