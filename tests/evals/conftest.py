"""Fixtures for eval tests: one server with the deterministic fake model per module."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from eval_harness import eval_server, sdk
from fakes.scripts import Script
from harness import RunningServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Script]]:
    with eval_server(tmp_path_factory.mktemp("evals")) as pair:
        yield pair


@pytest.fixture
def server(served: tuple[RunningServer, Script]) -> RunningServer:
    return served[0]


@pytest.fixture
def client(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with sdk(server) as c:
        yield c
