"""Fixtures for API tests: one real server per module, and the real SDK pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from harness import ADMIN_KEY, RunningServer, make_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server per test module (tests use their own agents/sessions, so they don't collide)."""
    # The log API alone: no engine answers the messages these tests append.
    running = RunningServer(make_config(tmp_path_factory.mktemp("server"), run_engine=False))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    """The real SDK, pointed at our server with the admin key; no SDK retries."""
    with anthropic.Anthropic(base_url=server.base_url, api_key=ADMIN_KEY, max_retries=0) as sdk:
        yield sdk
