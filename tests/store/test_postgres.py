"""PostgreSQL-only behaviour: several writers on one database, as several processes are."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest
from pg_harness import drop_schema, new_schema, postgres_dsn

from sessiond.store.postgres import PostgresStore
from sessiond.store.protocol import NewEvent, Record

pytestmark = pytest.mark.anyio

WRITERS = 8
APPENDS = 40


def _record(session_id: str) -> Record:
    return Record(
        kind="session",
        id=session_id,
        workspace_id="w",
        data=b"{}",
        created_at="2026-01-01T00:00:00.000000Z",
        updated_at="2026-01-01T00:00:00.000000Z",
    )


@pytest.fixture
async def database() -> AsyncIterator[tuple[str, str]]:
    dsn, schema = postgres_dsn(), new_schema()
    try:
        yield dsn, schema
    finally:
        await drop_schema(dsn, schema)


async def test_a_reader_tailing_by_position_never_sees_a_gap_fill_in(
    database: tuple[str, str],
) -> None:
    """8 stores (8 writer connections, as 8 processes would have) append at once while a
    reader tails the events table by position. Every read must only ever return positions
    above all it has seen: a smaller position committing later would be skipped for good
    by such a reader. And positions end up 1..N with no hole."""
    dsn, schema = database
    stores = [PostgresStore(dsn, schema=schema) for _ in range(WRITERS)]
    for store in stores:
        await store.open()
    reader = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    violations: list[tuple[int, int]] = []
    seen: list[int] = []
    try:
        for i, store in enumerate(stores):
            await store.create_stream(_record(f"s{i}"))
        base = int(await reader.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        done = anyio.Event()

        async def write(i: int) -> None:
            for _ in range(APPENDS):
                new = [NewEvent(type="x", data=b"{}") for _ in range(1 + i % 3)]
                await stores[i].append(f"s{i}", new, expected_seq=None)

        async def tail() -> None:
            top = base
            while True:
                finished = done.is_set()
                rows = await reader.fetch(
                    "SELECT position FROM events WHERE position > $1 ORDER BY position", top
                )
                for (position,) in rows:
                    if position <= top:
                        violations.append((top, position))
                    top = max(top, position)
                    seen.append(position)
                if finished:
                    return

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tail)
                async with anyio.create_task_group() as writers:
                    for i in range(WRITERS):
                        writers.start_soon(write, i)
                done.set()
        # Everything committed was seen by the tail, in order, exactly once, with no hole.
        total = sum(APPENDS * (1 + i % 3) for i in range(WRITERS))
        assert violations == []
        assert seen == list(range(base + 1, base + total + 1))
    finally:
        await reader.close()
        for store in stores:
            await store.close()


async def test_a_second_process_writing_is_seen_at_once(database: tuple[str, str]) -> None:
    """Nothing is cached on this backend: a record or event written through another store
    (another process) is what the next read returns, and its watchers wake."""
    dsn, schema = database
    first, second = PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)
    await first.open()
    await second.open()
    try:
        await first.create_stream(_record("s"))
        record = await first.get_record("session", "s")
        async with first.watch("s") as watch:
            await second.append("s", [NewEvent(type="x", data=b"{}")], expected_seq=0)
            with anyio.fail_after(5):
                assert await watch.wait(0) == 1  # woken by NOTIFY from the other store
        assert [e.seq for e in await first.read("s")] == [1]
        saved = await second.save_record(
            Record(
                kind="agent", id="a", workspace_id="w", data=b"1", created_at="x", updated_at="x"
            )
        )
        assert await first.get_record("agent", "a") == saved
        await second.save_record(
            Record(
                kind="session",
                id="s",
                workspace_id="w",
                data=b'{"changed":true}',
                created_at=record.created_at,
                updated_at="y",
                revision=record.revision,
            )
        )
        assert (await first.get_record("session", "s")).data == b'{"changed":true}'
    finally:
        await first.close()
        await second.close()


async def test_stores_opening_a_fresh_schema_together_all_open(
    database: tuple[str, str],
) -> None:
    """Processes starting together on a new schema collided making it (the schema is now
    made under the migration lock)."""
    dsn, schema = database
    stores = [PostgresStore(dsn, schema=schema) for _ in range(6)]
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        await stores[0].create_stream(_record("s"))
        assert await stores[5].last_seq("s") == 0
    finally:
        for store in stores:
            await store.close()


def test_a_schema_name_that_is_not_plain_is_refused() -> None:
    from sessiond.store.errors import InvalidInputError

    for bad in ("Upper", 'x"; drop table events; --', "1st"):
        with pytest.raises(InvalidInputError):
            PostgresStore("postgresql://nowhere/db", schema=bad)


async def test_a_writer_stuck_in_its_transaction_does_not_stop_the_others(
    database: tuple[str, str],
) -> None:
    """A process paused in the middle of a write transaction holds the cluster's write
    lock; the server ends such a transaction after a few seconds, so other processes'
    writes go on instead of waiting on it (for hours, if its host is gone)."""
    dsn, schema = database
    paused, other = PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)
    await paused.open()
    await other.open()
    try:
        await other.create_stream(_record("s"))
        # What a paused writer leaves: its transaction open, the write lock taken.
        stuck = paused._writer_conn  # noqa: SLF001 - the connection under test
        await stuck.execute("BEGIN")
        await stuck.execute("SELECT pg_advisory_xact_lock($1)", paused._write_lock)  # noqa: SLF001
        with anyio.fail_after(20):
            result = await other.append("s", [NewEvent(type="x", data=b"{}")], expected_seq=0)
        assert result.last_seq == 1
    finally:
        await other.close()
        with anyio.move_on_after(5):
            await paused.close()
