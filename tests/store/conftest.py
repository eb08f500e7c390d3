"""The backends every store contract test runs against.

"sqlite": a real file in WAL mode. "postgres": the real server named by TEST_POSTGRES_DSN,
in a throwaway schema per test (tests/pg_harness.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pg_harness import drop_schema, new_schema, postgres_dsn

from sessiond.store.protocol import Store
from sessiond.store.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgres"]

StoreFactory = Callable[[], Store]


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Makes unopened stores, all on the same fresh database (to reopen it)."""
    if request.param == "sqlite":
        yield lambda: SQLiteStore(str(tmp_path / "store.db"))
        return
    from sessiond.store.postgres import PostgresStore

    dsn = postgres_dsn()
    schema = new_schema()
    try:
        yield lambda: PostgresStore(dsn, schema=schema)
    finally:
        await drop_schema(dsn, schema)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    """An opened store on a fresh database."""
    opened = make_store()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
