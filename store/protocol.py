"""The store contract: what every backend (SQLite now, PostgreSQL later) provides.

Three kinds of things are kept:

* **Streams**: one append-only event log per session. Each event gets a contiguous
  per-stream `seq` from 1, a globally strictly increasing `position`, a public id
  (`sevt_…`) and a server timestamp. The store never decodes `data`.
* **Records**: mutable rows (agents' latest state, environments, sessions, workspaces,
  API keys), each with an optimistic `revision`. A session's record is its projection
  and is rewritten in the same transaction as every append to its stream.
* **Versions**: immutable snapshots (agent version N), written together with their
  record so "latest" and "version N" can never disagree.
* **Blobs**: immutable byte strings (uploaded files, skill archives) stored under the
  SHA-256 of their content, so the same content is kept once. A blob is written before
  the record that names it, and deleted by whoever deletes the last record naming it.
* **Leases**: who may act on something now (a worker on a session, a self-hosted worker on
  a work item), for a time, with a fencing token that grows with every new holder. An
  append carrying a `Fence` commits only while its token is still the lease's: a holder
  that lost its lease (paused, partitioned, its clock wrong) can no longer write. Expiry
  is judged by the store's one clock (the database's), never by a holder's.

Backends pass the one contract suite in `tests/store/`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event as the store keeps it: an envelope around opaque JSON `data`.

    This and the other value structs here are untracked by the cyclic GC (`gc=False`):
    they hold only strings, numbers and string maps, so they can never be in a cycle,
    and servers hold hundreds of thousands of them (each gen-2 pass walked them all)."""

    session_id: str
    seq: int
    """1-based, contiguous within one session."""
    position: int
    """Global order of commits; strictly increasing, never reused."""
    id: str
    """Public event id (`sevt_…`), unique across the store."""
    type: str
    data: bytes
    """The event body as a JSON object, exactly as the caller encoded it."""
    recorded_at: str
    """Server time of the append, canonical RFC 3339 (see `store.clock`)."""


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append: its type and its JSON body (without id or timestamp)."""

    type: str
    data: bytes
    id: str | None = None
    """A public id chosen in advance (`sevt_…`), e.g. one already announced to live
    subscribers in a delta preview; None lets the store assign one."""


class Record(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A mutable row. `revision` 0 means "not stored yet"; the store bumps it on each save."""

    kind: str
    id: str
    workspace_id: str
    data: bytes
    created_at: str
    updated_at: str
    archived_at: str | None = None
    tags: dict[str, str] = {}
    """Small string attributes that list queries filter on (status, agent_id, …)."""
    revision: int = 0
    due: bool = False
    """Its owner has work pending on it (a session with unanswered input or a turn in
    flight). Kept by the projector, and listed through an index of the due rows alone, so
    finding them costs what is due, not what is stored (`RecordQuery(due=True)`)."""


class Version(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An immutable snapshot of a record at version `version` (1-based)."""

    kind: str
    id: str
    version: int
    data: bytes
    created_at: str


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A held lease: who holds it, its fencing token, and until when (store time)."""

    name: str
    owner: str
    token: int
    """Strictly greater for each new holder of the same name; kept by its holder's renewals."""
    expires_at: str


class Fence(msgspec.Struct, frozen=True):
    """Proof of holding lease `lease` with `token`, carried by an append."""

    lease: str
    token: int


class AppendResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What an append wrote, or (on an idempotent retry) what the first attempt wrote."""

    events: list[StoredEvent]
    last_seq: int
    record: Record | None
    """The session record after the projector ran, when one exists."""
    replayed: bool = False
    """True when the idempotency key matched an earlier append: nothing new was written."""


class EventQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A read of one stream. Seq bounds are exclusive; time bounds compare `recorded_at`."""

    after_seq: int = 0
    before_seq: int | None = None
    types: frozenset[str] | None = None
    recorded_gt: str | None = None
    recorded_gte: str | None = None
    recorded_lt: str | None = None
    recorded_lte: str | None = None
    descending: bool = False
    limit: int | None = None


ALL_EVENTS = EventQuery()
"""The whole stream, in seq order."""


class RecordQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A page of records of one kind in one workspace, ordered by (created_at, id).

    `after` is the (created_at, id) of the last row of the previous page, in the
    direction of `descending`. `tags` maps a tag name to the set of accepted values.
    """

    kind: str
    workspace_id: str | None
    """None lists every workspace (for the server's own use, e.g. crash recovery)."""
    tags: Mapping[str, frozenset[str]] = {}
    created_gt: str | None = None
    created_gte: str | None = None
    created_lt: str | None = None
    created_lte: str | None = None
    include_archived: bool = False
    descending: bool = False
    after: tuple[str, str] | None = None
    limit: int = 20
    due: bool | None = None
    """True lists only due records, False only the others; None does not filter."""


Projector = Callable[[Record, Sequence[StoredEvent]], Record]
"""Pure function run inside the append transaction: (record before, new events) -> record after.

The store calls it after assigning ids, seqs and timestamps, and saves its result in the
same transaction as the events. If it raises, that append writes nothing and the error
reaches the caller.
"""


class Watch(Protocol):
    """A subscription to one stream's appends. Holds at most one number: never a queue."""

    async def wait(self, after_seq: int) -> int:
        """Return the stream's last seq as soon as it is greater than `after_seq`.

        Raises NotFoundError (code `session_deleted`) once the stream is deleted.
        """
        ...

    def next_commit(self, after_seq: int) -> asyncio.Future[None] | None:
        """None if the stream is already past `after_seq`; else a future that is done at
        the stream's next commit (or deletion). The future is shared by every watcher of
        the stream: wait on it with a done-callback (removed after) or `asyncio.wait`,
        never cancel it. For callers tailing many streams at once: waiting costs no task
        of its own.

        Raises NotFoundError (code `session_deleted`) once the stream is deleted.
        """
        ...


class Store(Protocol):
    """The persistence contract. Every method is safe to call concurrently."""

    async def open(self) -> None:
        """Connect, apply migrations, start the writer."""
        ...

    async def close(self) -> None:
        """Flush queued writes, stop the writer, disconnect."""
        ...

    # -- streams ----------------------------------------------------------------

    async def create_stream(
        self,
        record: Record,
        events: Sequence[NewEvent] = (),
        *,
        project: Projector | None = None,
    ) -> AppendResult:
        """Create a session's stream and its record (id = stream id) in one transaction.

        Raises ConflictError (`stream_exists`) when the id is taken.
        """
        ...

    async def import_stream(self, record: Record, events: Sequence[StoredEvent]) -> None:
        """Write a stream exactly as another store exported it, in one transaction: its
        record as given (a new row: revision 1), its events with their ids, seqs, types,
        data and `recorded_at`. Only positions are new (this store's global order, in seq
        order). No projector runs, and the record is published `due` if it is.

        Raises InvalidInputError (`invalid_stream`) unless the events are the record's,
        with seqs 1, 2, … in order; ConflictError (`stream_exists`, `record_exists`,
        `event_id_exists`) when an id is taken; either way nothing is written.
        """
        ...

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
        """Append events after `expected_seq` (None: after whatever is last).

        Raises NotFoundError (`session_not_found`) for an unknown stream,
        ConflictError (`seq_conflict`) when the stream's last seq is not `expected_seq`,
        and ConflictError (`fenced`) when `fence` is not the named lease's current token;
        either way nothing is written. With an `idempotency_key` seen before on this
        stream, returns the first append's result and writes nothing.
        """
        ...

    async def read(self, session_id: str, query: EventQuery = ALL_EVENTS) -> list[StoredEvent]:
        """Events of one stream matching `query`, in seq order (or reversed)."""
        ...

    async def get_event(self, event_id: str) -> StoredEvent:
        """One event by public id. Raises NotFoundError (`event_not_found`)."""
        ...

    async def last_seq(self, session_id: str) -> int:
        """The stream's last seq (0 when empty). Raises NotFoundError for an unknown stream."""
        ...

    def watch(self, session_id: str) -> AbstractAsyncContextManager[Watch]:
        """Subscribe to appends on one stream; wakes on commit, never by polling."""
        ...

    async def delete_stream(self, session_id: str) -> None:
        """Delete a stream, its events and its record; wakes its watchers."""
        ...

    # -- records and versions ---------------------------------------------------

    async def save_record(self, record: Record, *, version: Version | None = None) -> Record:
        """Insert (revision 0) or update (revision = stored revision) a record.

        With `version`, also inserts that immutable snapshot in the same transaction.
        Raises ConflictError (`record_exists`, `revision_conflict`, `version_exists`).
        Returns the record as stored, with its new revision.
        """
        ...

    async def get_record(self, kind: str, record_id: str) -> Record:
        """Raises NotFoundError (`<kind>_not_found`)."""
        ...

    async def list_records(self, query: RecordQuery) -> list[Record]:
        """One page of records; see RecordQuery."""
        ...

    async def delete_record(self, kind: str, record_id: str) -> None:
        """Delete a record and its versions. Raises NotFoundError."""
        ...

    async def get_version(self, kind: str, record_id: str, version: int) -> Version:
        """Raises NotFoundError (`<kind>_version_not_found`)."""
        ...

    async def list_versions(
        self, kind: str, record_id: str, *, after_version: int = 0, limit: int = 20
    ) -> list[Version]:
        """Versions in ascending order, strictly after `after_version`."""
        ...

    # -- notifications ------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(payload)` for every message on `topic` from any process sharing
        the database (best effort: a lost connection can drop some). The store itself
        publishes topic `due` with a session id whenever an append without a fence
        commits a record marked due. Returns the unsubscribe function."""
        ...

    async def publish(self, topic: str, payload: str) -> None:
        """Send `payload` (at most 7,000 bytes: NOTIFY's bound) to every subscriber of
        `topic` in every process, this one included."""
        ...

    # -- blobs --------------------------------------------------------------------------

    async def put_blob(self, data: bytes) -> str:
        """Store `data` durably (idempotent) and return its SHA-256, hex."""
        ...

    async def get_blob(self, digest: str) -> bytes:
        """A blob's bytes. Raises NotFoundError (`blob_not_found`)."""
        ...

    async def delete_blob(self, digest: str) -> None:
        """Remove a blob (a no-op when it is gone already)."""
        ...

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> Lease | None:
        """Take the lease for `ttl_s` seconds if it is free or expired (a new token), or
        extend it if `owner` holds it (the same token); None while another holds it."""
        ...

    async def renew_lease(self, lease: Lease, ttl_s: float) -> Lease | None:
        """Extend a held lease from now; None when it was lost (taken over since)."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Let the lease go at once (a no-op if it was lost); its token stays spent."""
        ...

    async def held_leases(self, names: Sequence[str]) -> set[str]:
        """Which of `names` somebody holds now (unexpired, by the store's clock)."""
        ...
