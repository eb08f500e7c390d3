"""The scale-out backend: PostgreSQL through asyncpg, shared by any number of processes.

Writes: every mutation is queued to this process's writer task, which commits whatever is
queued as ONE transaction on its own connection (group commit), each op in a savepoint of
its own so that a failing op sinks only itself. Reads use a connection pool.

**Positions are gap-free in commit order.** Each write transaction first takes a
transaction-level advisory lock (`_WRITE_LOCK`), held until it commits, and only then
reads and advances the position counter. So a transaction that takes positions after
another has to wait for that one to commit: commit order is position order, and a
reader tailing by position never sees a smaller position commit after a larger one. Do
not "optimise" the lock away, or move position allocation before it. The price is one
writer at a time across all processes; group commit is what keeps that cheap.

**Time** (`recorded_at`, lease expiry) is the database's clock, read under the same lock,
so processes on hosts whose clocks disagree still write one ordered history.

**No caches.** The SQLite backend serves recent events and records from memory because
every write is its own. Here another process may write at any moment, so every read goes
to the database: nothing can be stale, at the price of a round trip.

**Notifications.** Each commit NOTIFYs `sessiond_events` with `<session> <last seq>`
(-1: deleted) and, for an append without a fence that leaves a record due,
`sessiond_bus` with `due <session>`. One listening connection per process feeds them to
this process's watchers and subscribers. If it drops, every watcher is woken to re-read
and `due` subscribers get an empty payload (sweep now): a lost notification delays
nothing past that reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
from sessiond.store.notify import Bus, Notifier
from sessiond.store.postgres_schema import migrate
from sessiond.store.protocol import (
    ALL_EVENTS,
    AppendResult,
    EventQuery,
    Fence,
    Lease,
    NewEvent,
    Projector,
    Record,
    RecordQuery,
    StoredEvent,
    Version,
    Watch,
)

log = logging.getLogger("sessiond.store")

MAX_BATCH = 512
DEFAULT_POOL_SIZE = 10
_WRITE_LOCK = 0x5E55_10D1
"""The write lock's key, mixed with the schema's name: installations in separate schemas of
one database do not serialise each other."""
_WRITER_IDLE_MS = 5000
_LISTEN_PING_S = 5.0
_COMMAND_TIMEOUT_S = 30.0
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_EVENTS_CHANNEL = "sessiond_events"
_BUS_CHANNEL = "sessiond_bus"
_MAX_PAYLOAD = 7000
_EVENT_COLUMNS = "session_id, seq, position, id, type, data, recorded_at"
_RECORD_COLUMNS = (
    "kind, id, workspace_id, data, tags, created_at, updated_at, archived_at, revision, due"
)


def _ts(value: str) -> str:
    """A timestamptz expression as canonical RFC 3339 text (store/clock.py's form)."""
    return f"to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


_NOW = _ts("clock_timestamp()")
_encode_tags = msgspec.json.Encoder().encode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        session_id=row[0],
        seq=row[1],
        position=row[2],
        id=row[3],
        type=row[4],
        data=bytes(row[5]),
        recorded_at=row[6],
    )


def _record(row: Any) -> Record:
    return Record(
        kind=row[0],
        id=row[1],
        workspace_id=row[2],
        data=bytes(row[3]),
        tags=_decode_tags(row[4]),
        created_at=row[5],
        updated_at=row[6],
        archived_at=row[7],
        revision=row[8],
        due=row[9],
    )


def _translate(exc: BaseException) -> AppError:
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


def _dsn_and_options(url: str) -> tuple[str, dict[str, str]]:
    """The DSN for asyncpg, and our own options (`schema`, `pool_size`) from its query."""
    parts = urlsplit(url)
    ours = {"schema", "pool_size"}
    query = parse_qsl(parts.query)
    options = {k: v for k, v in query if k in ours}
    rest = urlencode([(k, v) for k, v in query if k not in ours])
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), options


class _Batch:
    """What one write transaction has done so far (read by the ops it runs)."""

    def __init__(self, conn: Any, now: str, next_position: int) -> None:
        self.conn = conn
        self.now = now
        self.next_position = next_position
        self.notify: list[str] = []  # `<session> <last seq>` per stream written
        self.due: list[str] = []  # sessions left due by an append without a fence


_Apply = Callable[[_Batch], Awaitable[Any]]


class _Append(NamedTuple):
    """An append as data, for the batched fast path (`_append_all`)."""

    session_id: str
    events: Sequence[NewEvent]
    expected_seq: int | None
    project: Projector | None
    fence: Fence | None


class _Op:
    __slots__ = ("append", "apply", "future")

    def __init__(self, apply: _Apply, append: _Append | None = None) -> None:
        self.apply = apply
        self.append = append
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class PostgresStore:
    """The `Store` on a PostgreSQL database (optionally in one schema of it)."""

    def __init__(
        self, url: str, *, schema: str | None = None, pool_size: int | None = None
    ) -> None:
        self.dsn, options = _dsn_and_options(url)
        self.schema = schema or options.get("schema")
        if self.schema is not None and not _SCHEMA_NAME.fullmatch(self.schema):
            raise InvalidInputError(
                f"schema: {self.schema!r} is not a plain lower-case name", code="bad_schema"
            )
        self._write_lock = _WRITE_LOCK ^ zlib.crc32((self.schema or "").encode())
        self.pool_size = (
            pool_size
            or int(options.get("pool_size") or os.environ.get("SESSIOND_PG_POOL_SIZE") or 0)
            or DEFAULT_POOL_SIZE
        )
        self._notifier = Notifier()
        self._bus = Bus()
        self._pool: Any = None
        self._writer_conn: Any = None
        self._listener: Any = None
        self._queue: asyncio.Queue[_Op | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------

    def _settings(self, *, writer: bool = False) -> dict[str, str]:
        settings = {"application_name": "sessiond"}
        if self.schema:
            settings["search_path"] = f'"{self.schema}"'
        if writer:
            # The writer holds the cluster's one write lock while in a transaction: if its
            # process stops (paused, its host gone), the server ends the transaction and
            # frees the lock, instead of every other process waiting on it for hours.
            settings.update(
                idle_in_transaction_session_timeout=str(_WRITER_IDLE_MS),
                tcp_keepalives_idle="5",
                tcp_keepalives_interval="2",
                tcp_keepalives_count="3",
            )
        return settings

    async def _connect(self, *, writer: bool = False) -> Any:
        return await asyncpg.connect(
            self.dsn,
            server_settings=self._settings(writer=writer),
            command_timeout=_COMMAND_TIMEOUT_S,
        )

    async def open(self) -> None:
        """Connect, migrate, start the writer and the listener."""
        try:
            self._writer_conn = await self._connect(writer=True)
            await migrate(self._writer_conn, self.schema)
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                server_settings=self._settings(),
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._close_connections()
            raise UnavailableError(
                f"cannot open the database: {exc}", code="database_down"
            ) from exc
        self._queue = asyncio.Queue()
        self._closing = False
        # Owned by the store and ended in close(), like the SQLite writer thread: callers
        # open stores without a task group of their own (CLI, tests, the app's lifespan).
        self._writer_task = asyncio.create_task(self._write_loop(), name="sessiond-pg-writer")
        listening = asyncio.get_running_loop().create_future()
        self._listener_task = asyncio.create_task(
            self._listen_loop(listening), name="sessiond-pg-listener"
        )
        try:
            await listening
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit what is queued, stop the writer and listener, disconnect."""
        self._closing = True
        if self._queue is not None and self._writer_task is not None:
            self._queue.put_nowait(None)
            await self._writer_task
        self._writer_task = None
        if self._listener_task is not None:
            self._listener_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener_task
            self._listener_task = None
        await self._close_connections()

    async def _close_connections(self) -> None:
        for attribute in ("_writer_conn", "_listener"):
            conn = getattr(self, attribute)
            if conn is not None:
                setattr(self, attribute, None)
                with contextlib.suppress(Exception):
                    await conn.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- notifications ------------------------------------------------------------------

    async def _listen_loop(self, listening: asyncio.Future[None]) -> None:
        """Hold the LISTEN connection; reconnect (and wake everyone) when it drops."""
        while not self._closing:
            try:
                self._listener = await self._connect()
                await self._listener.add_listener(_EVENTS_CHANNEL, self._on_events)
                await self._listener.add_listener(_BUS_CHANNEL, self._on_bus)
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def ended(_conn: Any, lost: asyncio.Future[None] = lost) -> None:
                    if not lost.done():
                        lost.set_result(None)

                self._listener.add_termination_listener(ended)
                if not listening.done():
                    listening.set_result(None)
                else:
                    # Reconnected: what was notified meanwhile is unknown. Re-read all.
                    self._notifier.wake_all()
                    self._bus.emit("due", "")
                # A connection that died without a word (no reset) is found by a ping.
                while not lost.done():
                    await asyncio.wait([lost], timeout=_LISTEN_PING_S)
                    if not lost.done():
                        await asyncio.wait_for(self._listener.fetchval("SELECT 1"), 5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not listening.done():
                    listening.set_exception(
                        UnavailableError(f"cannot listen: {exc}", code="database_down")
                    )
                    return
                log.warning("lost the LISTEN connection (%s); reconnecting", exc)
            finally:
                if self._listener is not None:
                    with contextlib.suppress(Exception):
                        await self._listener.close()
                    self._listener = None
            await asyncio.sleep(0.5)

    def _on_events(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        session_id, _, seq = payload.rpartition(" ")
        last_seq = int(seq)
        if last_seq < 0:
            self._notifier.deleted(session_id)
        else:
            self._notifier.appended(session_id, last_seq)

    def _on_bus(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        topic, _, message = payload.partition(" ")
        self._bus.emit(topic, message)

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Subscribe to a topic published by any process on this database."""
        return self._bus.subscribe(topic, callback)

    async def publish(self, topic: str, payload: str) -> None:
        """NOTIFY every process (this one hears it through its listener too)."""
        message = f"{topic} {payload}"
        if len(message.encode()) > _MAX_PAYLOAD:
            raise InvalidInputError(f"a message is at most {_MAX_PAYLOAD} bytes")
        await self._pool_execute("SELECT pg_notify($1, $2)", _BUS_CHANNEL, message)

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        """Subscribe to one stream's commits, from any process."""
        return self._notifier.watch(session_id)

    def watched_streams(self) -> int:
        """How many streams have live watchers (for leak checks)."""
        return self._notifier.watched()

    # -- the writer ---------------------------------------------------------------------

    async def _submit(self, apply: _Apply, append: _Append | None = None) -> Any:
        if self._queue is None or self._closing:
            raise UnavailableError("the store is closed", code="store_closed")
        op = _Op(apply, append)
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
                error = exc if isinstance(exc, AppError) else _translate(exc)
                outcomes, notices = [error for _ in batch], []
                await self._reconnect_writer()
            # The NOTIFYs went out with the commit; this process's own watchers hear of it
            # now, before the callers do (hearing it again from the listener is harmless:
            # a watcher keeps the highest seq). Bus messages come only through the
            # listener, so each is delivered once.
            for notice in notices:
                self._on_events(None, 0, _EVENTS_CHANNEL, notice)
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

    async def _run_batch(self, batch: list[_Op]) -> tuple[list[Any], list[str]]:
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
                f"SELECT {_NOW}, (SELECT value FROM meta WHERE key = 'position')"
            )
            start = (row[1] or 0) + 1
            state = _Batch(conn, row[0], start)
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
                    _EVENTS_CHANNEL,
                    state.notify,
                )
            if state.due:
                await conn.execute(
                    "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n",
                    _BUS_CHANNEL,
                    [f"due {session_id}" for session_id in state.due],
                )
        return outcomes, state.notify

    async def _run_one(self, state: _Batch, op: _Op) -> Any:
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
            return _translate(exc) if isinstance(exc, asyncpg.PostgresError) else exc

    async def _run_appends(self, state: _Batch, ops: list[_Op]) -> list[Any]:
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

    async def _append_all(self, state: _Batch, appends: list[_Append]) -> list[Any]:
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
                f"SELECT {_RECORD_COLUMNS} FROM records "
                "WHERE (kind, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                [kind for kind, _ in projected],
                [record_id for _, record_id in projected],
            ):
                record = _record(row)
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
                [_encode_tags(r.tags).decode() for r in saved],
                [r.updated_at for r in saved],
                [r.archived_at for r in saved],
                [r.due for r in saved],
                [r.revision for r in saved],
            )
        return outcomes

    def _append_checked(
        self,
        state: _Batch,
        append: _Append,
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

    # -- streams ------------------------------------------------------------------------

    async def _insert_events(
        self, state: _Batch, session_id: str, last_seq: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        stored = []
        for offset, event in enumerate(events):
            stored.append(
                StoredEvent(
                    session_id=session_id,
                    seq=last_seq + 1 + offset,
                    position=state.next_position + offset,
                    id=event.id or new_id("sevt"),
                    type=event.type,
                    data=event.data,
                    recorded_at=state.now,
                )
            )
        state.next_position += len(stored)
        if stored:
            await state.conn.executemany(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (e.session_id, e.seq, e.position, e.id, e.type, e.data, e.recorded_at)
                    for e in stored
                ],
            )
        return stored

    async def _project(
        self,
        state: _Batch,
        kind: str,
        session_id: str,
        stored: list[StoredEvent],
        project: Projector | None,
    ) -> Record | None:
        if project is None:
            return None
        row = await state.conn.fetchrow(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2",
            kind,
            session_id,
        )
        if row is None:
            raise NotFoundError(f"session {session_id!r} has no record", code="session_not_found")
        before = _record(row)
        after = project(before, stored)
        return await self._update_record(
            state, msgspec.structs.replace(after, revision=before.revision)
        )

    async def create_stream(
        self,
        record: Record,
        events: Sequence[NewEvent] = (),
        *,
        project: Projector | None = None,
    ) -> AppendResult:
        """Create a stream and its record, with initial events, in one transaction."""
        session_id = record.id

        async def apply(state: _Batch) -> AppendResult:
            await state.conn.execute(
                "INSERT INTO streams (session_id, record_kind, last_seq, created_at) "
                "VALUES ($1, $2, $3, $4)",
                session_id,
                record.kind,
                len(events),
                record.created_at,
            )
            saved = await self._insert_record(state, record)
            stored = await self._insert_events(state, session_id, 0, events)
            if stored and project is not None:
                saved = (
                    await self._project(state, record.kind, session_id, stored, project) or saved
                )
            state.notify.append(f"{session_id} {len(stored)}")
            if saved.due:
                state.due.append(session_id)
            return AppendResult(events=stored, last_seq=len(stored), record=saved)

        created: AppendResult = await self._submit(apply)
        return created

    async def import_stream(self, record: Record, events: Sequence[StoredEvent]) -> None:
        """Write an exported stream as it was (store/protocol.py), through the writer like
        `create_stream`: its positions are taken under the write lock, in seq order."""
        session_id = record.id
        for seq, event in enumerate(events, start=1):
            if event.session_id != session_id or event.seq != seq:
                raise InvalidInputError(
                    f"stream {session_id!r}: event {event.id!r} is not seq {seq} of it",
                    code="invalid_stream",
                )

        async def apply(state: _Batch) -> None:
            await state.conn.execute(
                "INSERT INTO streams (session_id, record_kind, last_seq, created_at) "
                "VALUES ($1, $2, $3, $4)",
                session_id,
                record.kind,
                len(events),
                record.created_at,
            )
            saved = await self._insert_record(state, record)
            first = state.next_position
            state.next_position += len(events)
            if events:
                await state.conn.executemany(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    [
                        (session_id, e.seq, first + i, e.id, e.type, e.data, e.recorded_at)
                        for i, e in enumerate(events)
                    ],
                )
            state.notify.append(f"{session_id} {len(events)}")
            if saved.due:
                state.due.append(session_id)

        await self._submit(apply)

    async def append(
        self,
        session_id: str,
        events: Sequence[NewEvent],
        *,
        expected_seq: int | None,
        idempotency_key: str | None = None,
        project: Projector | None = None,
        fence: Fence | None = None,
    ) -> AppendResult:
        """Append after `expected_seq` (None: after the last), all or nothing."""

        async def apply(state: _Batch) -> AppendResult:
            conn = state.conn
            row = await conn.fetchrow(
                "SELECT last_seq, record_kind FROM streams WHERE session_id = $1", session_id
            )
            if row is None:
                raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
            last_seq, kind = row[0], row[1]
            if fence is not None:
                token = await conn.fetchval("SELECT token FROM leases WHERE name = $1", fence.lease)
                if token != fence.token:
                    raise ConflictError(
                        f"lease {fence.lease!r} has moved on from token {fence.token}",
                        code="fenced",
                    )
            if idempotency_key is not None:
                seen = await conn.fetchrow(
                    "SELECT first_seq, count FROM idempotency WHERE session_id = $1 AND key = $2",
                    session_id,
                    idempotency_key,
                )
                if seen is not None:
                    first, n = seen[0], seen[1]
                    rows = await conn.fetch(
                        f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = $1 "
                        "AND seq >= $2 AND seq < $3 ORDER BY seq",
                        session_id,
                        first,
                        first + n,
                    )
                    return AppendResult(
                        events=[_event(r) for r in rows],
                        last_seq=first + n - 1,
                        record=None,
                        replayed=True,
                    )
            if expected_seq is not None and expected_seq != last_seq:
                raise ConflictError(
                    f"expected the session to end at seq {expected_seq}, it ends at {last_seq}",
                    code="seq_conflict",
                )
            if not events:
                return AppendResult(events=[], last_seq=last_seq, record=None)
            stored = await self._insert_events(state, session_id, last_seq, events)
            new_last = last_seq + len(stored)
            if idempotency_key is not None:
                await conn.execute(
                    "INSERT INTO idempotency (session_id, key, first_seq, count) "
                    "VALUES ($1, $2, $3, $4)",
                    session_id,
                    idempotency_key,
                    last_seq + 1,
                    len(stored),
                )
            record = await self._project(state, kind, session_id, stored, project)
            await conn.execute(
                "UPDATE streams SET last_seq = $1 WHERE session_id = $2", new_last, session_id
            )
            state.notify.append(f"{session_id} {new_last}")
            if record is not None and record.due and fence is None:
                state.due.append(session_id)
            return AppendResult(events=stored, last_seq=new_last, record=record)

        fast = (
            None
            if idempotency_key is not None
            else _Append(session_id, events, expected_seq, project, fence)
        )
        appended: AppendResult = await self._submit(apply, fast)
        return appended

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        if self._pool is None:
            raise UnavailableError("the store is closed", code="store_closed")
        try:
            return list(await self._pool.fetch(sql, *params))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise _translate(exc) from exc
        except OverflowError as exc:  # a client's number past 64-bit integers
            raise InvalidInputError(
                "a number in the request is too large", code="number_too_large"
            ) from exc

    async def _pool_execute(self, sql: str, *params: Any) -> None:
        if self._pool is None:
            raise UnavailableError("the store is closed", code="store_closed")
        try:
            await self._pool.execute(sql, *params)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise _translate(exc) from exc

    async def read(self, session_id: str, query: EventQuery = ALL_EVENTS) -> list[StoredEvent]:
        """Events of one stream, as one index seek on (session_id, seq)."""
        where = ["session_id = $1", "seq > $2"]
        params: list[Any] = [session_id, query.after_seq]

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.before_seq is not None:
            where.append(f"seq < {param(query.before_seq)}")
        if query.types is not None:
            if not query.types:
                return []
            where.append(f"type = ANY({param(sorted(query.types))})")
        for column_op, value in (
            (">", query.recorded_gt),
            (">=", query.recorded_gte),
            ("<", query.recorded_lt),
            ("<=", query.recorded_lte),
        ):
            if value is not None:
                where.append(f"recorded_at {column_op} {param(value)}")
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if query.descending:
            sql += " DESC"
        if query.limit is not None:
            sql += f" LIMIT {param(query.limit)}"
        return [_event(r) for r in await self._fetch(sql, *params)]

    async def get_event(self, event_id: str) -> StoredEvent:
        """One event by public id."""
        rows = await self._fetch(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = $1", event_id)
        if not rows:
            raise NotFoundError(f"event {event_id!r} not found", code="event_not_found")
        return _event(rows[0])

    async def last_seq(self, session_id: str) -> int:
        """The stream's last seq."""
        rows = await self._fetch("SELECT last_seq FROM streams WHERE session_id = $1", session_id)
        if not rows:
            raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
        return int(rows[0][0])

    async def delete_stream(self, session_id: str) -> None:
        """Delete a stream with its events, keys and record; wake its watchers."""

        async def apply(state: _Batch) -> None:
            conn = state.conn
            kind = await conn.fetchval(
                "DELETE FROM streams WHERE session_id = $1 RETURNING record_kind", session_id
            )
            if kind is None:
                raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
            await conn.execute("DELETE FROM events WHERE session_id = $1", session_id)
            await conn.execute("DELETE FROM idempotency WHERE session_id = $1", session_id)
            await conn.execute("DELETE FROM records WHERE kind = $1 AND id = $2", kind, session_id)
            await conn.execute("DELETE FROM versions WHERE kind = $1 AND id = $2", kind, session_id)
            state.notify.append(f"{session_id} -1")

        await self._submit(apply)

    # -- records and versions -----------------------------------------------------------

    async def _insert_record(self, state: _Batch, record: Record) -> Record:
        saved = msgspec.structs.replace(record, revision=1)
        await state.conn.execute(
            f"INSERT INTO records ({_RECORD_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)",
            saved.kind,
            saved.id,
            saved.workspace_id,
            saved.data,
            _encode_tags(saved.tags).decode(),
            saved.created_at,
            saved.updated_at,
            saved.archived_at,
            saved.revision,
            saved.due,
        )
        return saved

    async def _update_record(self, state: _Batch, record: Record) -> Record:
        updated = await state.conn.fetchval(
            "UPDATE records SET workspace_id = $1, data = $2, tags = $3::jsonb, updated_at = $4, "
            "archived_at = $5, due = $6, revision = revision + 1 "
            "WHERE kind = $7 AND id = $8 AND revision = $9 RETURNING revision",
            record.workspace_id,
            record.data,
            _encode_tags(record.tags).decode(),
            record.updated_at,
            record.archived_at,
            record.due,
            record.kind,
            record.id,
            record.revision,
        )
        if updated is None:
            exists = await state.conn.fetchval(
                "SELECT 1 FROM records WHERE kind = $1 AND id = $2", record.kind, record.id
            )
            if exists is None:
                raise NotFoundError(
                    f"{record.kind} {record.id!r} not found", code=f"{record.kind}_not_found"
                )
            raise ConflictError(
                f"{record.kind} {record.id!r} changed since it was read", code="revision_conflict"
            )
        return msgspec.structs.replace(record, revision=updated)

    async def save_record(self, record: Record, *, version: Version | None = None) -> Record:
        """Insert (revision 0) or update (matching revision), plus an optional version."""

        async def apply(state: _Batch) -> Record:
            if record.revision == 0:
                saved = await self._insert_record(state, record)
            else:
                saved = await self._update_record(state, record)
            if version is not None:
                await state.conn.execute(
                    "INSERT INTO versions (kind, id, version, data, created_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    version.kind,
                    version.id,
                    version.version,
                    version.data,
                    version.created_at,
                )
            return saved

        saved: Record = await self._submit(apply)
        return saved

    async def get_record(self, kind: str, record_id: str) -> Record:
        """One record, read from the database (nothing is cached: see the docstring)."""
        rows = await self._fetch(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2", kind, record_id
        )
        if not rows:
            raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
        return _record(rows[0])

    async def list_records(self, query: RecordQuery) -> list[Record]:
        """A keyset page of records, ordered by (created_at, id)."""
        params: list[Any] = [query.kind]

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        where = ["kind = $1"]
        if query.workspace_id is not None:
            where.append(f"workspace_id = {param(query.workspace_id)}")
        if query.due is not None:
            where.append("due" if query.due else "NOT due")
        for tag, values in sorted(query.tags.items()):
            if not values:
                return []
            where.append(f"tags->>{param(tag)} = ANY({param(sorted(values))})")
        for column_op, value in (
            (">", query.created_gt),
            (">=", query.created_gte),
            ("<", query.created_lt),
            ("<=", query.created_lte),
        ):
            if value is not None:
                where.append(f"created_at {column_op} {param(value)}")
        if not query.include_archived:
            where.append("archived_at IS NULL")
        direction = "DESC" if query.descending else "ASC"
        if query.after is not None:
            op = "<" if query.descending else ">"
            where.append(
                f"(created_at, id) {op} ({param(query.after[0])}, {param(query.after[1])})"
            )
        sql = (
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT {param(query.limit)}"
        )
        return [_record(r) for r in await self._fetch(sql, *params)]

    async def delete_record(self, kind: str, record_id: str) -> None:
        """Delete a record and its versions."""

        async def apply(state: _Batch) -> None:
            deleted = await state.conn.fetchval(
                "DELETE FROM records WHERE kind = $1 AND id = $2 RETURNING 1", kind, record_id
            )
            if deleted is None:
                raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
            await state.conn.execute(
                "DELETE FROM versions WHERE kind = $1 AND id = $2", kind, record_id
            )

        await self._submit(apply)

    async def get_version(self, kind: str, record_id: str, version: int) -> Version:
        """One immutable version."""
        rows = await self._fetch(
            "SELECT kind, id, version, data, created_at FROM versions "
            "WHERE kind = $1 AND id = $2 AND version = $3",
            kind,
            record_id,
            version,
        )
        if not rows:
            raise NotFoundError(
                f"{kind} {record_id!r} has no version {version}", code=f"{kind}_version_not_found"
            )
        k, i, v, d, c = rows[0]
        return Version(kind=k, id=i, version=v, data=bytes(d), created_at=c)

    async def list_versions(
        self, kind: str, record_id: str, *, after_version: int = 0, limit: int = 20
    ) -> list[Version]:
        """Versions in ascending order after `after_version`."""
        rows = await self._fetch(
            "SELECT kind, id, version, data, created_at FROM versions "
            "WHERE kind = $1 AND id = $2 AND version > $3 ORDER BY version LIMIT $4",
            kind,
            record_id,
            after_version,
            limit,
        )
        return [
            Version(kind=k, id=i, version=v, data=bytes(d), created_at=c) for k, i, v, d, c in rows
        ]

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> Lease | None:
        """Take or extend a lease, judged by the database's clock."""

        async def apply(state: _Batch) -> Lease | None:
            row = await state.conn.fetchrow(
                "INSERT INTO leases AS l (name, owner, token, expires_at) "
                "VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3)) "
                "ON CONFLICT (name) DO UPDATE SET "
                "  token = CASE WHEN l.owner = excluded.owner AND l.expires_at > clock_timestamp()"
                "               THEN l.token ELSE l.token + 1 END,"
                "  owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE l.expires_at <= clock_timestamp() OR l.owner = excluded.owner "
                "RETURNING token, " + _ts("expires_at"),
                name,
                owner,
                float(ttl_s),
            )
            if row is None:
                return None
            return Lease(name=name, owner=owner, token=row[0], expires_at=row[1])

        lease: Lease | None = await self._submit(apply)
        return lease

    async def renew_lease(self, lease: Lease, ttl_s: float) -> Lease | None:
        """Extend a held lease; None when another holder has taken it."""

        async def apply(state: _Batch) -> Lease | None:
            expires = await state.conn.fetchval(
                "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => $4) "
                "WHERE name = $1 AND owner = $2 AND token = $3 RETURNING " + _ts("expires_at"),
                lease.name,
                lease.owner,
                lease.token,
                float(ttl_s),
            )
            return None if expires is None else msgspec.structs.replace(lease, expires_at=expires)

        renewed: Lease | None = await self._submit(apply)
        return renewed

    async def held_leases(self, names: Sequence[str]) -> set[str]:
        """Which of the leases are unexpired now, by the database's clock."""
        if not names:
            return set()
        rows = await self._fetch(
            "SELECT name FROM leases "
            "WHERE name = ANY($1::text[]) AND expires_at > clock_timestamp()",
            list(names),
        )
        return {row[0] for row in rows}

    async def release_lease(self, lease: Lease) -> None:
        """Expire a held lease now (the row, and so its token, stays)."""

        async def apply(state: _Batch) -> None:
            await state.conn.execute(
                "UPDATE leases SET expires_at = clock_timestamp() "
                "WHERE name = $1 AND owner = $2 AND token = $3",
                lease.name,
                lease.owner,
                lease.token,
            )

        await self._submit(apply)
