"""SQLite-only behaviour: group commit's batching, and migrations of older files."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sessiond.store.protocol import NewEvent, Record, RecordQuery
from sessiond.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def session_record(session_id: str) -> Record:
    return Record(
        kind="session",
        id=session_id,
        workspace_id="w",
        data=b"{}",
        created_at="2026-01-01T00:00:00.000000Z",
        updated_at="2026-01-01T00:00:00.000000Z",
    )


def events(n: int) -> list[NewEvent]:
    return [NewEvent(type="user.message", data=b"{}") for _ in range(n)]


async def test_group_commit_batches_concurrent_appends(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "batch.db"))
    await store.open()
    try:
        for i in range(200):
            await store.create_stream(session_record(f"s{i}"))
        before = store.stats.commits
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lambda i=i: store.append(f"s{i}", events(1), expected_seq=0))
        commits = store.stats.commits - before
        assert commits < 50, f"200 concurrent appends took {commits} commits"
    finally:
        await store.close()


async def test_a_database_from_before_the_due_flag_marks_running_sessions_due(
    tmp_path: Path,
) -> None:
    """Migration 2 on a version-1 file: sessions a crash left running are due."""
    import sqlite3

    from sessiond.store.sqlite_schema import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    for name, status in (("r", "running"), ("i", "idle"), ("x", "rescheduling")):
        conn.execute(
            "INSERT INTO records VALUES ('session', ?, 'w', x'7b7d', ?, 't', 't', NULL, 1)",
            (name, f'{{"status":"{status}"}}'),
        )
    conn.close()
    store = SQLiteStore(str(path))
    await store.open()
    try:
        due = await store.list_records(RecordQuery(kind="session", workspace_id=None, due=True))
        assert sorted(r.id for r in due) == ["r", "x"]
    finally:
        await store.close()
