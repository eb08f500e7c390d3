"""The PostgreSQL backend's writer: group commit under the cluster's one write lock.

Every mutation is queued to this process's writer task, which commits whatever is queued
as ONE transaction on its own connection. The transaction first takes the write lock (an
advisory lock on `WRITE_LOCK` mixed with the schema's name), held until it commits, and
only then reads and advances the position counter. So a transaction that takes positions
after another has to wait for that one to commit: commit order is position order, and a
reader tailing by position never sees a smaller position commit after a larger one. Do
not "optimise" the lock away, or move position allocation before it. The price is one
writer at a time across all processes; group commit and the batched appends keep it
cheap, and the writer connection's idle-in-transaction timeout keeps a paused process
from holding it.

Within a batch, runs of consecutive appends go through `_append_all`: every stream, lease
and record they touch is read at once, checks and projectors run in memory, then one COPY
writes the events and one UPDATE each the streams and records (a dozen round trips however
many appends). Anything else runs as its own op in a savepoint, so a failing op sinks only
itself; a run the database refuses (an event id taken) is undone and redone op by op.

`store/postgres.py` holds the SQL of the other ops, the reads and the notifications: the
split mirrors `store/sqlite_writer.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import asyncpg
import msgspec

from sessiond.store.clock import new_id
from sessiond.store.errors import (
    AppError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from sessiond.store.protocol import AppendResult, Fence, NewEvent, Projector, Record, StoredEvent

log = logging.getLogger("sessiond.store")

MAX_BATCH = 512
WRITE_LOCK = 0x5E55_10D1
"""The write lock's key, mixed with the schema's name: installations in separate schemas of
one database do not serialise each other."""
WRITER_IDLE_MS = 5000
COMMAND_TIMEOUT_S = 30.0
EVENTS_CHANNEL = "sessiond_events"
BUS_CHANNEL = "sessiond_bus"
EVENT_COLUMNS = "session_id, seq, position, id, type, data, recorded_at"
RECORD_COLUMNS = (
    "kind, id, workspace_id, data, tags, created_at, updated_at, archived_at, revision, due"
)


def ts(value: str) -> str:
    """A timestamptz expression as canonical RFC 3339 text (store/clock.py's form)."""
    return f"to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


NOW = ts("clock_timestamp()")
encode_tags = msgspec.json.Encoder().encode
decode_tags = msgspec.json.Decoder(dict[str, str]).decode


def event_row(row: Any) -> StoredEvent:
    return StoredEvent(
        session_id=row[0],
        seq=row[1],
        position=row[2],
        id=row[3],
        type=row[4],
        data=bytes(row[5]),
        recorded_at=row[6],
    )


def record_row(row: Any) -> Record:
    return Record(
        kind=row[0],
        id=row[1],
        workspace_id=row[2],
        data=bytes(row[3]),
        tags=decode_tags(row[4]),
        created_at=row[5],
        updated_at=row[6],
        archived_at=row[7],
        revision=row[8],
        due=row[9],
    )


def translate(exc: BaseException) -> AppError:
    """asyncpg's exceptions enter here and nowhere else."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        constraint = exc.constraint_name or ""
        if constraint == "events_by_id":
            return ConflictError("an event with this id exists", code="event_id_exists")
        if constraint.startswith("versions"):
            return ConflictError("this version exists already", code="version_exists")
        if constraint.startswith("records"):
            return ConflictError("a record with this id exists", code="record_exists")
        if constraint.startswith("streams"):
            return ConflictError("a session with this id exists", code="stream_exists")
        return ConflictError(str(exc), code="conflict")
    if isinstance(exc, asyncpg.DataError | asyncpg.NumericValueOutOfRangeError):
        return InvalidInputError(f"a value in the request is out of range: {exc}", code="bad_value")
    return UnavailableError(f"database error: {exc}", code="database_error")


class Batch:
    """What one write transaction has done so far (read by the ops it runs)."""

    def __init__(self, conn: Any, now: str, next_position: int) -> None:
        self.conn = conn
        self.now = now
        self.next_position = next_position
        self.notify: list[str] = []  # `<session> <last seq>` per stream written
        self.due: list[str] = []  # sessions left due by an append without a fence


Apply = Callable[[Batch], Awaitable[Any]]


class Append(NamedTuple):
    """An append as data, for the batched fast path (`_append_all`)."""

    session_id: str
    events: Sequence[NewEvent]
    expected_seq: int | None
    project: Projector | None
    fence: Fence | None


class Op:
    __slots__ = ("append", "apply", "future")

    def __init__(self, apply: Apply, append: Append | None = None) -> None:
        self.apply = apply
        self.append = append
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class PostgresWriter:
    """The writer half of `PostgresStore`: its queue, its batches, the batched appends."""

    schema: str | None
    _write_lock: int
    _writer_conn: Any
    _queue: asyncio.Queue[Op | None] | None
    _closing: bool

    async def _connect(self, *, writer: bool = False) -> Any:
        """A new connection (the store's)."""
        raise NotImplementedError

    def _committed(self, notices: list[str]) -> None:
        """On the loop, after a commit: `<session> <last seq>` per stream written."""
        raise NotImplementedError

    # -- the writer ---------------------------------------------------------------------

    async def _submit(self, apply: Apply, append: Append | None = None) -> Any:
        if self._queue is None or self._closing:
            raise UnavailableError("the store is closed", code="store_closed")
        op = Op(apply, append)
        self._queue.put_nowait(op)
        return await op.future

    async def _write_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        closing = False
        while not closing:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH and not queue.empty():
                op = queue.get_nowait()
                if op is None:
                    closing = True
                    break
                batch.append(op)
            try:
                outcomes, notices = await self._run_batch(batch)
            except Exception as exc:  # the connection, or a bug: every caller hears of it
                error = exc if isinstance(exc, AppError) else translate(exc)
                outcomes, notices = [error for _ in batch], []
                await self._reconnect_writer()
            # The NOTIFYs went out with the commit; this process's own watchers hear of it
            # now, before the callers do (hearing it again from the listener is harmless:
            # a watcher keeps the highest seq). Bus messages come only through the
            # listener, so each is delivered once.
            self._committed(notices)
            for op, outcome in zip(batch, outcomes, strict=True):
                if op.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    op.future.set_exception(outcome)
                else:
                    op.future.set_result(outcome)

    async def _reconnect_writer(self) -> None:
        if self._writer_conn is not None and not self._writer_conn.is_closed():
            return
        try:
            self._writer_conn = await self._connect(writer=True)
        except Exception as exc:
            log.warning("cannot reconnect the writer yet: %s", exc)

    async def _run_batch(self, batch: list[Op]) -> tuple[list[Any], list[str]]:
        conn = self._writer_conn
        if conn is None or conn.is_closed():
            await self._reconnect_writer()
            conn = self._writer_conn
            if conn is None:
                raise UnavailableError("the database is unreachable", code="database_down")
        async with conn.transaction():
            # Commit order = position order: see the module docstring.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._write_lock)
            row = await conn.fetchrow(
                f"SELECT {NOW}, (SELECT value FROM meta WHERE key = 'position')"
            )
            start = (row[1] or 0) + 1
            state = Batch(conn, row[0], start)
            outcomes: list[Any] = []
            index = 0
            while index < len(batch):
                # Consecutive appends go through the batched fast path together; anything
                # else runs as its own op, in order.
                end = index
                while end < len(batch) and batch[end].append is not None:
                    end += 1
                if end > index:
                    outcomes += await self._run_appends(state, batch[index:end])
                    index = end
                else:
                    outcomes.append(await self._run_one(state, batch[index]))
                    index += 1
            if state.next_position != start:
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('position', $1) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    state.next_position - 1,
                )
            if state.notify:
                await conn.execute(
                    "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
                    EVENTS_CHANNEL,
                    state.notify,
                )
            if state.due:
                await conn.execute(
                    "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
                    BUS_CHANNEL,
                    [f"due {session_id}" for session_id in state.due],
                )
        return outcomes, state.notify

    async def _run_one(self, state: Batch, op: Op) -> Any:
        """One op in a savepoint of its own: if it fails, only it is undone."""
        position = state.next_position
        notified, due = len(state.notify), len(state.due)
        try:
            async with state.conn.transaction():
                return await op.apply(state)
        except Exception as exc:  # the savepoint is rolled back: only this op fails
            state.next_position = position
            del state.notify[notified:]
            del state.due[due:]
            if isinstance(exc, asyncpg.InterfaceError | OSError):
                raise  # the connection itself: the whole batch fails
            return translate(exc) if isinstance(exc, asyncpg.PostgresError) else exc

    async def _run_appends(self, state: Batch, ops: list[Op]) -> list[Any]:
        """Consecutive appends, batched (`_append_all`); if the database refuses a row the
        checks could not foresee (an event id taken), undone and run one by one to find
        whose it was."""
        position = state.next_position
        notified, due = len(state.notify), len(state.due)
        try:
            async with state.conn.transaction():  # a savepoint around the bulk writes
                return await self._append_all(state, [op.append for op in ops if op.append])
        except asyncpg.PostgresError:
            state.next_position = position
            del state.notify[notified:]
            del state.due[due:]
            return [await self._run_one(state, op) for op in ops]

    async def _append_all(self, state: Batch, appends: list[Append]) -> list[Any]:
        """A batch of appends in a dozen round trips, however many there are: read every
        stream, lease and record they touch at once, check and project in memory, then
        write the events with one COPY and the streams and records with one UPDATE each.
        An op that fails a check writes nothing and does not touch the others."""
        conn = state.conn
        ids = list({a.session_id for a in appends})
        streams: dict[str, tuple[int, str]] = {
            r[0]: (r[1], r[2])
            for r in await conn.fetch(
                "SELECT session_id, last_seq, record_kind FROM streams "
                "WHERE session_id = ANY($1::text[])",
                ids,
            )
        }
        fenced = list({a.fence.lease for a in appends if a.fence is not None})
        tokens: dict[str, int] = {}
        if fenced:
            rows = await conn.fetch(
                "SELECT name, token FROM leases WHERE name = ANY($1::text[])", fenced
            )
            tokens = {r[0]: r[1] for r in rows}
        records: dict[tuple[str, str], Record] = {}
        projected = list(
            {
                (streams[a.session_id][1], a.session_id)
                for a in appends
                if a.project is not None and a.session_id in streams
            }
        )
        if projected:
            # By (kind, id), the primary key: by id alone it was a scan of every record,
            # under the cluster's write lock.
            for row in await conn.fetch(
                f"SELECT {RECORD_COLUMNS} FROM records "
                "WHERE (kind, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [kind for kind, _ in projected],
                [record_id for _, record_id in projected],
            ):
                record = record_row(row)
                records[(record.kind, record.id)] = record
        outcomes: list[Any] = []
        rows_out: list[tuple[Any, ...]] = []
        changed_streams: dict[str, int] = {}
        changed_records: dict[tuple[str, str], Record] = {}
        for append in appends:
            try:
                outcomes.append(
                    self._append_checked(
                        state, append, streams, tokens, records, rows_out, changed_records
                    )
                )
                changed_streams[append.session_id] = streams[append.session_id][0]
            except Exception as exc:  # a check or the projector: this op alone fails
                outcomes.append(exc)
        if rows_out:
            await conn.copy_records_to_table(
                "events",
                records=rows_out,
                columns=["session_id", "seq", "position", "id", "type", "data", "recorded_at"],
                schema_name=self.schema,
            )
        if changed_streams:
            await conn.execute(
                "UPDATE streams AS s SET last_seq = v.last_seq "
                "FROM unnest($1::text[], $2::bigint[]) AS v(id, last_seq) "
                "WHERE s.session_id = v.id",
                list(changed_streams),
                list(changed_streams.values()),
            )
        if changed_records:
            saved = list(changed_records.values())
            await conn.execute(
                "UPDATE records AS r SET workspace_id = v.ws, data = v.data, tags = v.tags::jsonb,"
                " updated_at = v.updated, archived_at = v.archived, due = v.due,"
                " revision = v.revision "
                "FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[],"
                " $6::text[], $7::text[], $8::boolean[], $9::bigint[])"
                " AS v(kind, id, ws, data, tags, updated, archived, due, revision) "
                "WHERE r.kind = v.kind AND r.id = v.id",
                [r.kind for r in saved],
                [r.id for r in saved],
                [r.workspace_id for r in saved],
                [r.data for r in saved],
                [encode_tags(r.tags).decode() for r in saved],
                [r.updated_at for r in saved],
                [r.archived_at for r in saved],
                [r.due for r in saved],
                [r.revision for r in saved],
            )
        return outcomes

    def _append_checked(
        self,
        state: Batch,
        append: Append,
        streams: dict[str, tuple[int, str]],
        tokens: dict[str, int],
        records: dict[tuple[str, str], Record],
        rows_out: list[tuple[Any, ...]],
        changed_records: dict[tuple[str, str], Record],
    ) -> AppendResult:
        """One append of `_append_all`, in memory: raises before changing anything."""
        session_id = append.session_id
        known = streams.get(session_id)
        if known is None:
            raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
        last_seq, kind = known
        fence = append.fence
        if fence is not None and tokens.get(fence.lease) != fence.token:
            raise ConflictError(
                f"lease {fence.lease!r} has moved on from token {fence.token}", code="fenced"
            )
        if append.expected_seq is not None and append.expected_seq != last_seq:
            raise ConflictError(
                f"expected the session to end at seq {append.expected_seq}, it ends at {last_seq}",
                code="seq_conflict",
            )
        if not append.events:
            return AppendResult(events=[], last_seq=last_seq, record=None)
        stored = [
            StoredEvent(
                session_id=session_id,
                seq=last_seq + 1 + offset,
                position=state.next_position + offset,
                id=event.id or new_id("sevt"),
                type=event.type,
                data=event.data,
                recorded_at=state.now,
            )
            for offset, event in enumerate(append.events)
        ]
        record: Record | None = None
        if append.project is not None:
            before = records.get((kind, session_id))
            if before is None:
                raise NotFoundError(
                    f"session {session_id!r} has no record", code="session_not_found"
                )
            after = append.project(before, stored)
            record = msgspec.structs.replace(after, revision=before.revision + 1)
            records[(kind, session_id)] = changed_records[(kind, session_id)] = record
        state.next_position += len(stored)
        rows_out.extend(
            (e.session_id, e.seq, e.position, e.id, e.type, e.data, e.recorded_at) for e in stored
        )
        new_last = last_seq + len(stored)
        streams[session_id] = (new_last, kind)
        state.notify.append(f"{session_id} {new_last}")
        if record is not None and record.due and fence is None:
            state.due.append(session_id)
        return AppendResult(events=stored, last_seq=new_last, record=record)
