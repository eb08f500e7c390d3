"""The embedded backend: SQLite in WAL mode, one group-committing writer, pooled readers.

Writes go through one writer thread that commits whatever is queued as one transaction
(store/sqlite_writer.py); this module holds the SQL each op runs inside such a batch, and
the reads, which aiosqlite connections run beside the writer (WAL lets them).

One process writes a file (ARCHITECTURE.md): the writer's stream cache, the tail cache
(store/tail.py) and the record cache (store/record_cache.py) hear of every write because
every write is this process's own.

The writer thread starts in `open()` and ends in `close()`, after every queued write:
the store is opened by callers that own no task group of their own (CLI, tests, the
app's lifespan), so `close()` is the single place it ends.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from itertools import count
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec

from sessiond.store.blobs import BlobDirectory
from sessiond.store.clock import later, new_id, now_ts
from sessiond.store.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
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
from sessiond.store.sqlite_writer import (
    EVENT_COLUMNS,
    UNKNOWN,
    Op,
    SQLiteWriter,
    call,
    translate,
)
from sessiond.store.tail import TailCache

READERS = 4
_RECORD_COLUMNS = (
    "kind, id, workspace_id, data, tags, created_at, updated_at, archived_at, revision, due"
)
_encode_tags = msgspec.json.Encoder().encode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode


def _event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        session_id=row[0],
        seq=row[1],
        position=row[2],
        id=row[3],
        type=row[4],
        data=bytes(row[5]),
        recorded_at=row[6],
    )


def _record(row: Sequence[Any]) -> Record:
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
        due=bool(row[9]),
    )


def _follows_a_seq(query: EventQuery) -> bool:
    """Whether the query asks only for what follows a seq (what the tail cache holds)."""
    return (
        query.before_seq is None
        and query.types is None
        and not query.descending
        and query.recorded_gt is None
        and query.recorded_gte is None
        and query.recorded_lt is None
        and query.recorded_lte is None
    )


class SQLiteStore(SQLiteWriter):
    """The `Store` on one SQLite file: the SQL of each op (run by the writer in
    store/sqlite_writer.py), and the reads."""

    def __init__(
        self, path: str, *, synchronous: str = "FULL", tail: TailCache | None = None
    ) -> None:
        super().__init__(path, synchronous, tail)
        self._blobs = BlobDirectory(Path(f"{path}.blobs"))
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = count()

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate, start the writer."""
        await anyio.to_thread.run_sync(self._open_writer)
        for _ in range(READERS):
            reader = await aiosqlite.connect(self.path)
            await reader.execute("PRAGMA busy_timeout = 10000")
            await reader.execute("PRAGMA query_only = ON")
            self._readers.append(reader)
        self._start_writer()

    async def close(self) -> None:
        """Drain queued writes, stop the writer, close every connection."""
        await self._stop_writer()
        for reader in self._readers:
            await reader.close()
        self._readers = []
        await self._close_writer()

    def _stream(self, conn: sqlite3.Connection, session_id: str) -> tuple[int, str] | None:
        """(last_seq, record kind) as of the batch so far; None if there is no stream."""
        if session_id in self._batch_streams:
            return self._batch_streams[session_id]
        state = self._streams.get(session_id)
        if state is None:
            row = conn.execute(
                "SELECT last_seq, record_kind FROM streams WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            state = self._streams[session_id] = (row[0], row[1])
        return state

    def _insert_events(
        self, conn: sqlite3.Connection, session_id: str, last_seq: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        recorded_at = self._batch_time
        stored = []
        for offset, event in enumerate(events):
            position = self._next_position
            self._next_position += 1
            stored.append(
                StoredEvent(
                    session_id=session_id,
                    seq=last_seq + 1 + offset,
                    position=position,
                    id=event.id or new_id("sevt"),
                    type=event.type,
                    data=event.data,
                    recorded_at=recorded_at,
                )
            )
        rows = [
            (e.session_id, e.seq, e.position, e.id, e.type, e.data, e.recorded_at) for e in stored
        ]
        if self._defer_rows:
            self._pending_rows.extend(rows)
        else:
            conn.executemany(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
        self.stats.appended_events += len(stored)
        return stored

    def _project(
        self,
        conn: sqlite3.Connection,
        kind: str,
        session_id: str,
        stored: list[StoredEvent],
        project: Projector | None,
    ) -> Record | None:
        if project is None:
            return None
        key = (kind, session_id)
        before = self._batch_records.get(key) or self._projected.get(key)
        if not isinstance(before, Record):
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ?", key
            ).fetchone()
            if row is None:
                raise NotFoundError(
                    f"session {session_id!r} has no record", code="session_not_found"
                )
            before = _record(row)
        after = project(before, stored)
        saved = self._update_record(conn, msgspec.structs.replace(after, revision=before.revision))
        # The row now holds exactly this: `after` came from the row as it was.
        self._batch_records[key] = saved
        return saved

    async def create_stream(
        self,
        record: Record,
        events: Sequence[NewEvent] = (),
        *,
        project: Projector | None = None,
    ) -> AppendResult:
        """Create a stream and its record, with initial events, in one transaction."""
        session_id = record.id

        def apply(conn: sqlite3.Connection) -> AppendResult:
            conn.execute(
                "INSERT INTO streams (session_id, record_kind, last_seq, created_at) "
                "VALUES (?, ?, ?, ?)",
                (session_id, record.kind, len(events), record.created_at),
            )
            saved = self._insert_record(conn, record)
            stored = self._insert_events(conn, session_id, 0, events)
            if stored and project is not None:
                saved = self._project(conn, record.kind, session_id, stored, project) or saved
            self._batch_streams[session_id] = (len(stored), record.kind)
            op.notify.append((session_id, len(stored)))
            if saved.due:
                op.due = session_id
            return AppendResult(events=stored, last_seq=len(stored), record=saved)

        op = Op(call, (apply,))
        created: AppendResult = await self._submit_op(op)
        return created

    async def import_stream(self, record: Record, events: Sequence[StoredEvent]) -> None:
        """Write an exported stream as it was (store/protocol.py), through the writer like
        `create_stream`, so the caches hear of it as of any other write."""
        session_id = record.id
        for seq, event in enumerate(events, start=1):
            if event.session_id != session_id or event.seq != seq:
                raise InvalidInputError(
                    f"stream {session_id!r}: event {event.id!r} is not seq {seq} of it",
                    code="invalid_stream",
                )

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO streams (session_id, record_kind, last_seq, created_at) "
                "VALUES (?, ?, ?, ?)",
                (session_id, record.kind, len(events), record.created_at),
            )
            saved = self._insert_record(conn, record)
            rows = []
            for event in events:
                rows.append(
                    (
                        session_id,
                        event.seq,
                        self._next_position,
                        event.id,
                        event.type,
                        event.data,
                        event.recorded_at,
                    )
                )
                self._next_position += 1
            if self._defer_rows:
                self._pending_rows.extend(rows)
            else:
                conn.executemany(
                    f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
            self.stats.appended_events += len(rows)
            # As create_stream: the writer's stream cache learns the stream at commit, and
            # watchers are woken with its last seq (the tail cache keeps none of it).
            self._batch_streams[session_id] = (len(events), record.kind)
            op.notify.append((session_id, len(events)))
            if saved.due:
                op.due = session_id

        op = Op(call, (apply,))
        await self._submit_op(op)

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
        args = (self, session_id, events, expected_seq, idempotency_key, project, fence)
        appended: AppendResult = await self._submit_op(Op(SQLiteStore._apply_append, args))
        return appended

    def _apply_append(
        self,
        session_id: str,
        events: Sequence[NewEvent],
        expected_seq: int | None,
        idempotency_key: str | None,
        project: Projector | None,
        fence: Fence | None,
        conn: sqlite3.Connection,
        op: Op,
    ) -> AppendResult:
        """`append`, in the writer thread."""
        state = self._stream(conn, session_id)
        if state is None:
            raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
        if fence is not None:
            held = conn.execute("SELECT token FROM leases WHERE name = ?", (fence.lease,))
            row = held.fetchone()
            if row is None or row[0] != fence.token:
                raise ConflictError(
                    f"lease {fence.lease!r} has moved on from token {fence.token}",
                    code="fenced",
                )
        last_seq, kind = state
        if idempotency_key is not None:
            self._flush_rows(conn)  # a replay reads events rows
            seen = conn.execute(
                "SELECT first_seq, count FROM idempotency WHERE session_id = ? AND key = ?",
                (session_id, idempotency_key),
            ).fetchone()
            if seen is not None:
                first, n = seen
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? "
                    "AND seq >= ? AND seq < ? ORDER BY seq",
                    (session_id, first, first + n),
                ).fetchall()
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
        stored = self._insert_events(conn, session_id, last_seq, events)
        new_last = last_seq + len(stored)
        if idempotency_key is not None:
            conn.execute(
                "INSERT INTO idempotency (session_id, key, first_seq, count) VALUES (?, ?, ?, ?)",
                (session_id, idempotency_key, last_seq + 1, len(stored)),
            )
        record = self._project(conn, kind, session_id, stored, project)
        self._batch_streams[session_id] = (new_last, kind)  # last: nothing fails after
        op.notify.append((session_id, new_last))
        if record is not None and record.due and fence is None:
            op.due = session_id
        return AppendResult(events=stored, last_seq=new_last, record=record)

    def _reader(self) -> aiosqlite.Connection:
        if not self._readers:
            raise UnavailableError("the store is closed", code="store_closed")
        return self._readers[next(self._next_reader) % len(self._readers)]

    async def _fetchall(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # One call on the reader's thread runs the statement to its end, so no two reads
        # interleave on a connection. When execute and fetch were separate steps, another
        # read could start while a statement was mid-way; the connection's read
        # transaction (its snapshot) stayed open as long as any statement was, so a read
        # that began after an append returned could miss it: the engine then left the
        # input unanswered (found by bench/engine_turn.py at 50 sessions). Shielded, so a
        # cancelled caller never leaves a statement open either.
        try:
            with anyio.CancelScope(shield=True):
                rows = list(await self._reader().execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        except OverflowError as exc:  # a client's number past SQLite's 64-bit integers
            raise InvalidInputError(
                "a number in the request is too large", code="number_too_large"
            ) from exc
        return rows

    async def read(self, session_id: str, query: EventQuery = ALL_EVENTS) -> list[StoredEvent]:
        """Events of one stream, as one index seek on (session_id, seq); a plain read of
        what follows a recent seq comes from the tail cache (store/tail.py)."""
        if _follows_a_seq(query):
            held = self._tail.after(session_id, query.after_seq, query.limit)
            if held is not None:
                return held
        where = ["session_id = ?", "seq > ?"]
        params: list[Any] = [session_id, query.after_seq]
        if query.before_seq is not None:
            where.append("seq < ?")
            params.append(query.before_seq)
        if query.types is not None:
            if not query.types:
                return []
            where.append(f"type IN ({', '.join('?' * len(query.types))})")
            params.extend(sorted(query.types))
        for column_op, value in (
            (">", query.recorded_gt),
            (">=", query.recorded_gte),
            ("<", query.recorded_lt),
            ("<=", query.recorded_lte),
        ):
            if value is not None:
                where.append(f"recorded_at {column_op} ?")
                params.append(value)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq"
        if query.descending:
            sql += " DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [_event(r) for r in await self._fetchall(sql, params)]

    async def get_event(self, event_id: str) -> StoredEvent:
        """One event by public id."""
        rows = await self._fetchall(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))
        if not rows:
            raise NotFoundError(f"event {event_id!r} not found", code="event_not_found")
        return _event(rows[0])

    async def last_seq(self, session_id: str) -> int:
        """The stream's last seq."""
        held = self._tail.last_seq(session_id)
        if held is not None:
            return held
        rows = await self._fetchall(
            "SELECT last_seq FROM streams WHERE session_id = ?", (session_id,)
        )
        if not rows:
            raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
        return int(rows[0][0])

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        """Subscribe to one stream's commits."""
        return self._notifier.watch(session_id)

    async def delete_stream(self, session_id: str) -> None:
        """Delete a stream with its events, keys and record; wake its watchers."""

        def apply(conn: sqlite3.Connection) -> None:
            self._flush_rows(conn)  # rows this batch appended must go with the stream
            row = conn.execute(
                "SELECT record_kind FROM streams WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"session {session_id!r} not found", code="session_not_found")
            conn.execute("DELETE FROM events WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM idempotency WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM streams WHERE session_id = ?", (session_id,))
            self._touch(row[0], session_id)
            conn.execute("DELETE FROM records WHERE kind = ? AND id = ?", (row[0], session_id))
            conn.execute("DELETE FROM versions WHERE kind = ? AND id = ?", (row[0], session_id))
            self._batch_streams[session_id] = None
            op.notify.append((session_id, -1))

        op = Op(call, (apply,))
        await self._submit_op(op)

    # -- records and versions ---------------------------------------------------------

    def _touch(self, kind: str, record_id: str) -> None:
        """The op being applied writes this record (the record cache drops it)."""
        op = self._applying
        assert op is not None
        if op.records is None:
            op.records = []
        op.records.append((kind, record_id))
        self._batch_records[(kind, record_id)] = UNKNOWN

    def _insert_record(self, conn: sqlite3.Connection, record: Record) -> Record:
        saved = msgspec.structs.replace(record, revision=1)
        self._touch(saved.kind, saved.id)
        conn.execute(
            f"INSERT INTO records ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                saved.kind,
                saved.id,
                saved.workspace_id,
                saved.data,
                _encode_tags(saved.tags),
                saved.created_at,
                saved.updated_at,
                saved.archived_at,
                saved.revision,
                saved.due,
            ),
        )
        return saved

    def _update_record(self, conn: sqlite3.Connection, record: Record) -> Record:
        self._touch(record.kind, record.id)
        cursor = conn.execute(
            "UPDATE records SET workspace_id = ?, data = ?, tags = ?, updated_at = ?, "
            "archived_at = ?, due = ?, revision = revision + 1 "
            "WHERE kind = ? AND id = ? AND revision = ?",
            (
                record.workspace_id,
                record.data,
                _encode_tags(record.tags),
                record.updated_at,
                record.archived_at,
                record.due,
                record.kind,
                record.id,
                record.revision,
            ),
        )
        if cursor.rowcount == 0:
            exists = conn.execute(
                "SELECT 1 FROM records WHERE kind = ? AND id = ?", (record.kind, record.id)
            ).fetchone()
            if exists is None:
                raise NotFoundError(
                    f"{record.kind} {record.id!r} not found", code=f"{record.kind}_not_found"
                )
            raise ConflictError(
                f"{record.kind} {record.id!r} changed since it was read", code="revision_conflict"
            )
        return msgspec.structs.replace(record, revision=record.revision + 1)

    async def save_record(self, record: Record, *, version: Version | None = None) -> Record:
        """Insert (revision 0) or update (matching revision), plus an optional version."""

        def apply(conn: sqlite3.Connection) -> Record:
            if record.revision == 0:
                saved = self._insert_record(conn, record)
            else:
                saved = self._update_record(conn, record)
            if version is not None:
                conn.execute(
                    "INSERT INTO versions (kind, id, version, data, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (version.kind, version.id, version.version, version.data, version.created_at),
                )
            return saved

        return await self._submit(apply)  # type: ignore[no-any-return]

    # -- blobs ----------------------------------------------------------------------------

    async def put_blob(self, data: bytes) -> str:
        """A file under `<database>.blobs/`, named by its SHA-256 (store/blobs.py)."""
        return await self._blobs.put(data)

    async def get_blob(self, digest: str) -> bytes:
        """A blob's bytes; NotFoundError (`blob_not_found`)."""
        return await self._blobs.get(digest)

    async def delete_blob(self, digest: str) -> None:
        """Remove a blob if it is there."""
        await self._blobs.delete(digest)

    async def get_record(self, kind: str, record_id: str) -> Record:
        """One record (from the record cache when it holds it: store/record_cache.py)."""
        cached = self._record_cache.get(kind, record_id)
        if cached is not None:
            return cached
        epoch = self._record_cache.epoch
        rows = await self._fetchall(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        )
        if not rows:
            raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
        record = _record(rows[0])
        self._record_cache.fill(record, epoch)
        return record

    async def list_records(self, query: RecordQuery) -> list[Record]:
        """A keyset page of records, ordered by (created_at, id)."""
        where = ["kind = ?"]
        params: list[Any] = [query.kind]
        if query.workspace_id is not None:
            where.append("workspace_id = ?")
            params.append(query.workspace_id)
        if query.due is not None:
            where.append("due = 1" if query.due else "due = 0")
        for tag, values in sorted(query.tags.items()):
            if not values:
                return []
            where.append(f"json_extract(tags, ?) IN ({', '.join('?' * len(values))})")
            params.append(f'$."{tag}"')
            params.extend(sorted(values))
        for column_op, value in (
            (">", query.created_gt),
            (">=", query.created_gte),
            ("<", query.created_lt),
            ("<=", query.created_lte),
        ):
            if value is not None:
                where.append(f"created_at {column_op} ?")
                params.append(value)
        if not query.include_archived:
            where.append("archived_at IS NULL")
        direction = "DESC" if query.descending else "ASC"
        if query.after is not None:
            where.append(f"(created_at, id) {'<' if query.descending else '>'} (?, ?)")
            params.extend(query.after)
        sql = (
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT ?"
        )
        params.append(query.limit)
        return [_record(r) for r in await self._fetchall(sql, params)]

    async def delete_record(self, kind: str, record_id: str) -> None:
        """Delete a record and its versions."""

        def apply(conn: sqlite3.Connection) -> None:
            self._touch(kind, record_id)
            cursor = conn.execute(
                "DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
            conn.execute("DELETE FROM versions WHERE kind = ? AND id = ?", (kind, record_id))

        await self._submit(apply)

    async def get_version(self, kind: str, record_id: str, version: int) -> Version:
        """One immutable version."""
        rows = await self._fetchall(
            "SELECT kind, id, version, data, created_at FROM versions "
            "WHERE kind = ? AND id = ? AND version = ?",
            (kind, record_id, version),
        )
        if not rows:
            raise NotFoundError(
                f"{kind} {record_id!r} has no version {version}", code=f"{kind}_version_not_found"
            )
        kind_, id_, number, data, created_at = rows[0]
        return Version(kind=kind_, id=id_, version=number, data=bytes(data), created_at=created_at)

    async def list_versions(
        self, kind: str, record_id: str, *, after_version: int = 0, limit: int = 20
    ) -> list[Version]:
        """Versions in ascending order after `after_version`."""
        rows = await self._fetchall(
            "SELECT kind, id, version, data, created_at FROM versions "
            "WHERE kind = ? AND id = ? AND version > ? ORDER BY version LIMIT ?",
            (kind, record_id, after_version, limit),
        )
        return [
            Version(kind=k, id=i, version=v, data=bytes(d), created_at=c) for k, i, v, d, c in rows
        ]

    # -- notifications ------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Subscribe to a topic (one process writes a SQLite file: this process's bus)."""
        return self._bus.subscribe(topic, callback)

    async def publish(self, topic: str, payload: str) -> None:
        """Deliver to this process's subscribers."""
        self._bus.emit(topic, payload)

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> Lease | None:
        """Take or extend a lease (store/protocol.py), judged by this store's clock."""

        def apply(conn: sqlite3.Connection) -> Lease | None:
            now = self._batch_time
            row = conn.execute(
                "SELECT owner, token, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                token = 1
            elif row[0] == owner and row[2] > now:
                token = row[1]
            elif row[2] <= now:
                token = row[1] + 1
            else:
                return None
            lease = Lease(name=name, owner=owner, token=token, expires_at=later(now, ttl_s))
            conn.execute(
                "INSERT INTO leases (name, owner, token, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "token = excluded.token, expires_at = excluded.expires_at",
                (name, owner, token, lease.expires_at),
            )
            return lease

        return await self._submit(apply)  # type: ignore[no-any-return]

    async def renew_lease(self, lease: Lease, ttl_s: float) -> Lease | None:
        """Extend a held lease; None when another holder has taken it."""

        def apply(conn: sqlite3.Connection) -> Lease | None:
            renewed = msgspec.structs.replace(lease, expires_at=later(self._batch_time, ttl_s))
            cursor = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND token = ?",
                (renewed.expires_at, lease.name, lease.owner, lease.token),
            )
            return renewed if cursor.rowcount else None

        return await self._submit(apply)  # type: ignore[no-any-return]

    async def release_lease(self, lease: Lease) -> None:
        """Expire a held lease now (the row, and so its token, stays)."""

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ? AND token = ?",
                (self._batch_time, lease.name, lease.owner, lease.token),
            )

        await self._submit(apply)

    async def held_leases(self, names: Sequence[str]) -> set[str]:
        """Which of the leases are unexpired now."""
        if not names:
            return set()
        marks = ", ".join("?" * len(names))
        rows = await self._fetchall(
            f"SELECT name FROM leases WHERE expires_at > ? AND name IN ({marks})",
            (now_ts(), *names),
        )
        return {row[0] for row in rows}

    def watched_streams(self) -> int:
        """How many streams have live watchers (for leak checks)."""
        return self._notifier.watched()
