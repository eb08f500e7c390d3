"""The scale-out backend: PostgreSQL through asyncpg, shared by any number of processes.

Writes: every mutation is queued to this process's writer (store/postgres_writer.py),
which commits whatever is queued as ONE transaction under the cluster's write lock, so
positions are gap-free in commit order; this module holds the SQL each op runs inside
such a batch, the reads (a connection pool) and the notifications.

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
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from sessiond.store.blobs import check_digest, digest_of
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from sessiond.store.notify import Bus, Notifier
from sessiond.store.postgres_schema import migrate
from sessiond.store.postgres_writer import (
    BUS_CHANNEL,
    COMMAND_TIMEOUT_S,
    EVENT_COLUMNS,
    EVENTS_CHANNEL,
    RECORD_COLUMNS,
    WRITE_LOCK,
    WRITER_IDLE_MS,
    Append,
    Batch,
    Op,
    PostgresWriter,
    encode_tags,
    event_row,
    record_row,
    translate,
    ts,
)
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

DEFAULT_POOL_SIZE = 10
_LISTEN_PING_S = 5.0
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MAX_PAYLOAD = 7000


def _dsn_and_options(url: str) -> tuple[str, dict[str, str]]:
    """The DSN for asyncpg, and our own options (`schema`, `pool_size`) from its query."""
    parts = urlsplit(url)
    ours = {"schema", "pool_size"}
    query = parse_qsl(parts.query)
    options = {k: v for k, v in query if k in ours}
    rest = urlencode([(k, v) for k, v in query if k not in ours])
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), options


class PostgresStore(PostgresWriter):
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
        self._write_lock = WRITE_LOCK ^ zlib.crc32((self.schema or "").encode())
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
        self._queue: asyncio.Queue[Op | None] | None = None
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
                idle_in_transaction_session_timeout=str(WRITER_IDLE_MS),
                tcp_keepalives_idle="5",
                tcp_keepalives_interval="2",
                tcp_keepalives_count="3",
            )
        return settings

    async def _connect(self, *, writer: bool = False) -> Any:
        return await asyncpg.connect(
            self.dsn,
            server_settings=self._settings(writer=writer),
            command_timeout=COMMAND_TIMEOUT_S,
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
                await self._listener.add_listener(EVENTS_CHANNEL, self._on_events)
                await self._listener.add_listener(BUS_CHANNEL, self._on_bus)
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
        await self._pool_execute("SELECT pg_notify($1, $2)", BUS_CHANNEL, message)

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        """Subscribe to one stream's commits, from any process."""
        return self._notifier.watch(session_id)

    def _committed(self, notices: list[str]) -> None:
        """This process's own watchers hear of a commit at once (the listener's copy of
        the NOTIFY comes later and is harmless: a watcher keeps the highest seq)."""
        for notice in notices:
            self._on_events(None, 0, EVENTS_CHANNEL, notice)

    def watched_streams(self) -> int:
        """How many streams have live watchers (for leak checks)."""
        return self._notifier.watched()

    # -- streams ------------------------------------------------------------------------

    async def _insert_events(
        self, state: Batch, session_id: str, last_seq: int, events: Sequence[NewEvent]
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
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (e.session_id, e.seq, e.position, e.id, e.type, e.data, e.recorded_at)
                    for e in stored
                ],
            )
        return stored

    async def _project(
        self,
        state: Batch,
        kind: str,
        session_id: str,
        stored: list[StoredEvent],
        project: Projector | None,
    ) -> Record | None:
        if project is None:
            return None
        row = await state.conn.fetchrow(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2",
            kind,
            session_id,
        )
        if row is None:
            raise NotFoundError(f"session {session_id!r} has no record", code="session_not_found")
        before = record_row(row)
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

        async def apply(state: Batch) -> AppendResult:
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

        async def apply(state: Batch) -> None:
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
                    f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

        async def apply(state: Batch) -> AppendResult:
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
                        f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = $1 "
                        "AND seq >= $2 AND seq < $3 ORDER BY seq",
                        session_id,
                        first,
                        first + n,
                    )
                    return AppendResult(
                        events=[event_row(r) for r in rows],
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
            else Append(session_id, events, expected_seq, project, fence)
        )
        appended: AppendResult = await self._submit(apply, fast)
        return appended

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        if self._pool is None:
            raise UnavailableError("the store is closed", code="store_closed")
        try:
            return list(await self._pool.fetch(sql, *params))
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise translate(exc) from exc
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
            raise translate(exc) from exc

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
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if query.descending:
            sql += " DESC"
        if query.limit is not None:
            sql += f" LIMIT {param(query.limit)}"
        return [event_row(r) for r in await self._fetch(sql, *params)]

    async def get_event(self, event_id: str) -> StoredEvent:
        """One event by public id."""
        rows = await self._fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1", event_id)
        if not rows:
            raise NotFoundError(f"event {event_id!r} not found", code="event_not_found")
        return event_row(rows[0])

    async def last_seq(self, session_id: str) -> int:
        """The stream's last seq."""
        rows = await self._fetch("SELECT last_seq FROM streams WHERE session_id = $1", session_id)
        if not rows:
            raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
        return int(rows[0][0])

    async def delete_stream(self, session_id: str) -> None:
        """Delete a stream with its events, keys and record; wake its watchers."""

        async def apply(state: Batch) -> None:
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

    async def _insert_record(self, state: Batch, record: Record) -> Record:
        saved = msgspec.structs.replace(record, revision=1)
        await state.conn.execute(
            f"INSERT INTO records ({RECORD_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)",
            saved.kind,
            saved.id,
            saved.workspace_id,
            saved.data,
            encode_tags(saved.tags).decode(),
            saved.created_at,
            saved.updated_at,
            saved.archived_at,
            saved.revision,
            saved.due,
        )
        return saved

    async def _update_record(self, state: Batch, record: Record) -> Record:
        updated = await state.conn.fetchval(
            "UPDATE records SET workspace_id = $1, data = $2, tags = $3::jsonb, updated_at = $4, "
            "archived_at = $5, due = $6, revision = revision + 1 "
            "WHERE kind = $7 AND id = $8 AND revision = $9 RETURNING revision",
            record.workspace_id,
            record.data,
            encode_tags(record.tags).decode(),
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

        async def apply(state: Batch) -> Record:
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

    # -- blobs ----------------------------------------------------------------------------

    async def put_blob(self, data: bytes) -> str:
        """A row of the `blobs` table, keyed by the content's SHA-256 (idempotent)."""
        digest = digest_of(data)
        await self._pool_execute(
            "INSERT INTO blobs (digest, data, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (digest) DO NOTHING",
            digest,
            data,
            now_ts(),
        )
        return digest

    async def get_blob(self, digest: str) -> bytes:
        """A blob's bytes; NotFoundError (`blob_not_found`)."""
        check_digest(digest)
        rows = await self._fetch("SELECT data FROM blobs WHERE digest = $1", digest)
        if not rows:
            raise NotFoundError(f"blob {digest} not found", code="blob_not_found")
        return bytes(rows[0][0])

    async def delete_blob(self, digest: str) -> None:
        """Remove a blob if it is there."""
        check_digest(digest)
        await self._pool_execute("DELETE FROM blobs WHERE digest = $1", digest)

    async def get_record(self, kind: str, record_id: str) -> Record:
        """One record, read from the database (nothing is cached: see the docstring)."""
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2", kind, record_id
        )
        if not rows:
            raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
        return record_row(rows[0])

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
            f"SELECT {RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT {param(query.limit)}"
        )
        return [record_row(r) for r in await self._fetch(sql, *params)]

    async def delete_record(self, kind: str, record_id: str) -> None:
        """Delete a record and its versions."""

        async def apply(state: Batch) -> None:
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

        async def apply(state: Batch) -> Lease | None:
            row = await state.conn.fetchrow(
                "INSERT INTO leases AS l (name, owner, token, expires_at) "
                "VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3)) "
                "ON CONFLICT (name) DO UPDATE SET "
                "  token = CASE WHEN l.owner = excluded.owner AND l.expires_at > clock_timestamp()"
                "               THEN l.token ELSE l.token + 1 END,"
                "  owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE l.expires_at <= clock_timestamp() OR l.owner = excluded.owner "
                "RETURNING token, " + ts("expires_at"),
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

        async def apply(state: Batch) -> Lease | None:
            expires = await state.conn.fetchval(
                "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => $4) "
                "WHERE name = $1 AND owner = $2 AND token = $3 RETURNING " + ts("expires_at"),
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

        async def apply(state: Batch) -> None:
            await state.conn.execute(
                "UPDATE leases SET expires_at = clock_timestamp() "
                "WHERE name = $1 AND owner = $2 AND token = $3",
                lease.name,
                lease.owner,
                lease.token,
            )

        await self._submit(apply)
