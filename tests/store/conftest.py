"""The backend fixture every store contract test runs against.

Parametrized by backend name: "sqlite" always (a real file in WAL mode). A "postgres"
parameter joins when that backend exists; it will skip, saying why, when
TEST_POSTGRES_DSN is unset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessiond.store.protocol import Store
from sessiond.store.sqlite import SQLiteStore

BACKENDS = ["sqlite"]


def make_store(backend: str, tmp_path: Path) -> Store:
    """An unopened store of the named backend."""
    if backend == "sqlite":
        return SQLiteStore(str(tmp_path / "store.db"))
    raise AssertionError(f"unknown backend {backend}")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened store on a fresh database."""
    opened = make_store(request.param, tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
