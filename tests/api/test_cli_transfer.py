"""`sessiond export` and `sessiond import` as a user runs them: SQLite to PostgreSQL and
back out, the lines identical but for the header's time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from pg_harness import drop_schema, new_schema, postgres_dsn

from sessiond.store.protocol import NewEvent, Record
from sessiond.store.sqlite import SQLiteStore

pytestmark = pytest.mark.slow


def _cli(*args: str, url: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "sessiond.api.cli", *args],
        env={**os.environ, "SESSIOND_DATABASE_URL": url},
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


async def _fill(path: Path) -> None:
    store = SQLiteStore(str(path))
    await store.open()
    try:
        record = Record(
            kind="session",
            id="sesn_cli",
            workspace_id="wrkspc_default",
            data=b'{"n":1}',
            created_at="2026-01-01T00:00:00.000000Z",
            updated_at="2026-01-01T00:00:00.000000Z",
            tags={"status": "idle", "z": "1", "a": "2"},
        )
        body = b'{"content":[{"type":"text","text":"h\\u00e9llo \\"quoted\\""}]}'
        await store.create_stream(record, [NewEvent(type="user.message", data=body)] * 3)
        await store.save_record(
            Record(
                kind="agent",
                id="agent_cli",
                workspace_id="wrkspc_default",
                data=b"{}",
                created_at="2026-01-01T00:00:00.000000Z",
                updated_at="2026-01-01T00:00:00.000000Z",
            )
        )
    finally:
        await store.close()


def test_export_import_export_round_trip_through_postgres(tmp_path: Path) -> None:
    dsn, schema = postgres_dsn(), new_schema()
    sqlite_url = f"sqlite:///{tmp_path / 'data' / 'sessiond.db'}"
    anyio.run(_fill, tmp_path / "data" / "sessiond.db")
    try:
        first = _cli("export", url=sqlite_url)
        _cli("import", "-", url=f"{dsn}?schema={schema}", stdin=first)
        second = _cli("export", url=f"{dsn}?schema={schema}")
    finally:
        asyncio.run(drop_schema(dsn, schema))
    assert first.splitlines()[1:] == second.splitlines()[1:]
    assert len(first.splitlines()) == 3  # header, the agent, the session's stream
