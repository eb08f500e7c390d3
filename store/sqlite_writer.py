"""The SQLite backend's writer: one thread, group commit, a savepoint only when needed.

Every mutation is queued to one writer thread. The writer takes whatever is queued, runs
the whole batch on a stdlib `sqlite3` connection as ONE transaction (one failing append
does not sink its neighbours: see `_run_batch`), commits, and only then hands the outcomes
back to the event loop, which resolves each caller's future and wakes watchers. One fsync
then covers many appends: that is what lets thousands of sessions append at once. A
dedicated thread (not a task hopping to a worker thread per batch) takes the next batch
while the loop is still delivering the last one, and costs one thread hop per append.

The writer keeps, on its thread, each stream's last seq and the session records it last
projected, so an append needs no SELECT. `store/sqlite.py` holds the SQL of each op (run
here inside a batch) and the reads: the two read side by side with `store/postgres.py`,
whose writer is the same idea on a database that several processes share.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from sessiond.store.clock import now_ts
from sessiond.store.errors import AppError, ConflictError, InvalidInputError, UnavailableError
from sessiond.store.notify import Bus, Notifier
from sessiond.store.protocol import AppendResult, Record
from sessiond.store.record_cache import RecordCache
from sessiond.store.sqlite_schema import migrate
from sessiond.store.tail import TailCache

MAX_BATCH = 2048
STREAM_CACHE_SIZE = 100_000
PROJECTED_CACHE_SIZE = 10_000
UNKNOWN = object()  # a record the writer must read from the database
EVENT_COLUMNS = "session_id, seq, position, id, type, data, recorded_at"


class StoreStats(msgspec.Struct):
    """Counters to check that group commit batches (cheap to keep)."""

    commits: int = 0
    operations: int = 0
    appended_events: int = 0


def translate(exc: sqlite3.Error) -> AppError:
    """sqlite3's exceptions enter here and nowhere else."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "events.id" in text:
            return ConflictError("an event with this id exists", code="event_id_exists")
        if "versions" in text:
            return ConflictError("this version exists already", code="version_exists")
        if "records" in text:
            return ConflictError("a record with this id exists", code="record_exists")
        if "streams" in text:
            return ConflictError("a session with this id exists", code="stream_exists")
        return ConflictError(text, code="conflict")
    if "locked" in text or "busy" in text:
        return UnavailableError(f"database busy: {text}", code="database_busy")
    return UnavailableError(f"database error: {text}", code="database_error")


class Redo(Exception):
    """The fast path cannot tell which op a failure belongs to: redo the batch op by op."""


class Op:
    """One queued mutation, run inside the batch transaction as `apply(*args, conn, op)`,
    and its future.

    Hot paths pass a plain function and its arguments rather than a closure: a closure
    and its cells were eight more objects per append for the cyclic GC to walk (its
    collections were the append's p99, bench/append.py)."""

    __slots__ = ("apply", "args", "due", "future", "notify", "records")

    def __init__(self, apply: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.apply = apply
        self.args = args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.notify: list[tuple[str, int]] = []  # (session_id, last_seq), or seq -1 = deleted
        self.records: list[tuple[str, str]] | None = None  # (kind, id) of records it wrote
        self.due: str | None = None  # a session it left due, without a fence (topic `due`)


def call(apply: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection, op: Op) -> Any:
    """An op given as a function of the connection alone."""
    return apply(conn)


class SQLiteWriter:
    """The writer half of `SQLiteStore`: its thread, its batches, their delivery."""

    def __init__(self, path: str, synchronous: str, tail: TailCache | None) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidInputError(f"synchronous: unknown setting {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.stats = StoreStats()
        self._notifier = Notifier()
        self._bus = Bus()
        self._tail = tail if tail is not None else TailCache()
        self._record_cache = RecordCache()
        self._applying: Op | None = None  # the op the writer thread is running
        self._writer_conn: sqlite3.Connection | None = None
        self._ops: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_limiter = anyio.CapacityLimiter(1)
        self._next_position = 1
        # Writer-thread state. Streams' (last_seq, kind) as committed, and as changed by
        # the batch in progress (None: deleted); the batch's changes reach the table in
        # one UPDATE per stream before its COMMIT, and this cache after it.
        self._streams: dict[str, tuple[int, str]] = {}
        self._batch_streams: dict[str, tuple[int, str] | None] = {}
        # Session records as this writer last projected them (committed), and as the batch
        # in progress changed them (UNKNOWN: written some other way, or rolled back: read
        # it). A projection then starts from memory, not from a SELECT.
        self._projected: dict[tuple[str, str], Record] = {}
        self._batch_records: dict[tuple[str, str], Record | object] = {}
        self._batch_time = ""
        # In the fast path, the batch's event rows go in with one executemany at its end.
        self._defer_rows = False
        self._pending_rows: list[tuple[Any, ...]] = []

    def _start_writer(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer = threading.Thread(
            target=self._write_thread, name="sessiond-sqlite-writer", daemon=True
        )
        self._writer.start()

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self._ops.put(None)
            await anyio.to_thread.run_sync(writer.join)
            await anyio.sleep(0)  # the last outcomes are delivered before the store closes

    async def _close_writer(self) -> None:
        if self._writer_conn is not None:
            conn, self._writer_conn = self._writer_conn, None
            await anyio.to_thread.run_sync(conn.close, limiter=self._thread_limiter)

    def _open_writer(self) -> None:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA busy_timeout = 10000")
            migrate(conn)
            high = conn.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()
            top = conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0
            self._next_position = max(top, high[0] if high else 0) + 1
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc) from exc
        self._writer_conn = conn

    # -- the writer -------------------------------------------------------------------

    def _write_thread(self) -> None:
        """Take what is queued (up to MAX_BATCH), commit it as one batch, hand the
        outcomes to the loop; until `close()` queues None."""
        ops = self._ops
        loop = self._loop
        assert loop is not None
        closing = False
        while not closing:
            first = ops.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    op = ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    closing = True
                    break
                batch.append(op)
            try:
                outcomes: list[Any] = self._run_batch(batch)
            except BaseException as exc:  # a bug: every caller of the batch hears of it
                outcomes = [exc for _ in batch]
            self._applying = None  # (so as not to keep the last op and its events alive)
            try:
                loop.call_soon_threadsafe(self._deliver, batch, outcomes)
            except RuntimeError:
                return  # the loop is gone: nobody is waiting any more

    def _deliver(self, batch: list[Op], outcomes: list[Any]) -> None:
        """On the loop: resolve each op's future, and wake watchers of what committed."""
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.records:  # before anyone hears back: no reader sees what it replaced
                self._record_cache.written(op.records)
            if isinstance(outcome, BaseException):
                if not op.future.done():
                    op.future.set_exception(outcome)
                continue
            for session_id, last_seq in op.notify:
                committed = (
                    outcome.events
                    if isinstance(outcome, AppendResult) and not outcome.replayed
                    else ()
                )
                self._tail.committed(session_id, committed, last_seq)
                if last_seq < 0:
                    self._notifier.deleted(session_id)
                else:
                    self._notifier.appended(session_id, last_seq)
            if op.due is not None:
                self._bus.emit("due", op.due)
            if not op.future.done():
                op.future.set_result(outcome)

    def _run_batch(self, batch: list[Op]) -> list[Any]:
        conn = self._writer_conn
        assert conn is not None
        start_position = self._next_position
        self._batch_streams.clear()
        self._batch_records.clear()
        self._batch_time = now_ts()  # recorded_at: one time per commit
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = translate(exc)
            return [error for _ in batch]
        self._defer_rows = True
        self._pending_rows.clear()
        outcomes = self._apply_all(conn, batch, savepoints=False)
        self._defer_rows = False
        if outcomes is not None:
            try:
                self._flush_rows(conn)
            except Redo:
                outcomes = None
        if outcomes is None:
            # An op failed after it had written: undo the batch, then redo every op in a
            # savepoint of its own so that only the failed one is rolled back.
            try:
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                error = translate(exc)
                return [error for _ in batch]
            self._next_position = start_position
            self._batch_streams.clear()
            self._batch_records.clear()
            self._pending_rows.clear()
            for op in batch:
                op.notify.clear()
            outcomes = self._apply_all(conn, batch, savepoints=True)
            assert outcomes is not None
        try:
            changed = [(v[0], k) for k, v in self._batch_streams.items() if v is not None]
            if changed:
                conn.executemany("UPDATE streams SET last_seq = ? WHERE session_id = ?", changed)
            if self._next_position != start_position:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('position', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (self._next_position - 1,),
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._next_position = start_position
            self._batch_streams.clear()
            self._batch_records.clear()
            error = translate(exc)
            return [error for _ in batch]
        if len(self._streams) > STREAM_CACHE_SIZE:
            self._streams.clear()
        for session_id, state in self._batch_streams.items():
            if state is None:
                self._streams.pop(session_id, None)
            else:
                self._streams[session_id] = state
        self._batch_streams.clear()
        if len(self._projected) > PROJECTED_CACHE_SIZE:
            self._projected.clear()
        for key, known in self._batch_records.items():
            if isinstance(known, Record):
                self._projected[key] = known
            else:
                self._projected.pop(key, None)
        self._batch_records.clear()
        self.stats.commits += 1
        self.stats.operations += len(batch)
        return outcomes

    def _apply_all(
        self, conn: sqlite3.Connection, batch: list[Op], *, savepoints: bool
    ) -> list[Any] | None:
        """Each op's outcome or error. Without savepoints (the fast path: most ops either
        succeed or fail on a check before writing), None as soon as an op fails after it
        wrote something, which only a rollback can undo."""
        outcomes: list[Any] = []
        for op in batch:
            if savepoints:
                conn.execute("SAVEPOINT op")
            changes = conn.total_changes
            pending = len(self._pending_rows)
            try:
                self._applying = op
                outcome = op.apply(*op.args, conn, op)
            except Redo:
                return None
            except BaseException as exc:
                if savepoints:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                elif conn.total_changes != changes:
                    return None
                del self._pending_rows[pending:]  # its rows, not yet written
                op.notify.clear()
                for key in op.records or ():
                    self._batch_records[key] = UNKNOWN  # rolled back: read it again
                outcomes.append(translate(exc) if isinstance(exc, sqlite3.Error) else exc)
                continue
            if savepoints:
                conn.execute("RELEASE op")
            outcomes.append(outcome)
        return outcomes

    async def _submit(self, apply: Callable[[sqlite3.Connection], Any]) -> Any:
        return await self._submit_op(Op(call, (apply,)))

    async def _submit_op(self, op: Op) -> Any:
        if self._writer is None:
            raise UnavailableError("the store is closed", code="store_closed")
        self._ops.put(op)
        return await op.future

    def _flush_rows(self, conn: sqlite3.Connection) -> None:
        """Write the batch's deferred event rows (before anything that reads or deletes
        events, and at the batch's end). A failure here belongs to no single op: the
        batch is redone op by op."""
        if not self._pending_rows:
            return
        rows, self._pending_rows = self._pending_rows, []
        try:
            conn.executemany(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
        except sqlite3.Error as exc:
            raise Redo from exc

    # -- streams ----------------------------------------------------------------------
