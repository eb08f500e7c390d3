"""Moving sessions out of an installation and into another: one session, or everything.

**One session** travels as a `SessionExport`: what `GET /v1/sessions/{id}/export` serves,
what `POST /v1/sessions/import` takes (with where to put it), what `sessiond eval replay
FILE` replays and what the golden logs (tests/evals/golden) hold.

**A whole installation** travels as JSON lines, read and written through the `Store`
protocol alone, so it moves between the SQLite and PostgreSQL backends either way:

    {"type":"header","version":1,"exported_at":"…"}
    {"type":"record","record":{"kind":"agent","id":"agent_…","workspace_id":"…",
        "created_at":"…","updated_at":"…","archived_at":null,"due":false,"tags":{},"data":{…}}}
    {"type":"version","kind":"agent","id":"agent_…","version":1,"created_at":"…","data":{…}}
    {"type":"stream","record":{…},"events":[{"id":"sevt_…","seq":1,"type":"user.message",
        "recorded_at":"…","data":{…}},…]}

Kinds come in `KINDS` order, the records of a kind in (created_at, id) order, each followed
by its versions. A record that owns a stream (a session, an eval run) travels in its
stream's line, never in a record line: a store writes the two together. Bodies (`data`)
are embedded as the JSON they are stored as, byte for byte, and tags with sorted keys (a
PostgreSQL store hands them back in jsonb's order), so an installation exported, imported
into the other backend and exported again gives the same lines, header aside.

Deliberate choices (don't "fix" these without reading why):

1. Positions are not exported. They are one store's global order; the importing store
   assigns its own, in seq order within each stream. The order *between* streams is not
   kept; nothing outside the store reads positions.
2. Revisions are not exported. An imported record starts at revision 1, plus one for each
   further version: the protocol writes a version only with its record (`save_record`),
   so each version line rewrites its record unchanged.
3. Idempotency keys and leases are not exported (the protocol does not read them): a
   client retrying, after the move, an append it made before it is not recognised, and
   lease tokens start over.
4. An import is not one transaction. It refuses an id the store holds already
   (ConflictError, naming the line), and what it wrote before stays. Import into a store
   no server has opened yet (a server writes its default workspace when it starts), or
   one you can throw away.
5. A live installation can be exported: a stream and its record are read until they
   agree (a projection is written with each append). The export as a whole is not one
   snapshot: stop the server for a point-in-time copy.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence

import msgspec

from sessiond.runtime.engine.fold import SessionState
from sessiond.runtime.wire.encoding import to_wire
from sessiond.store.clock import now_ts
from sessiond.store.errors import ConflictError, InvalidInputError, NotFoundError
from sessiond.store.protocol import EventQuery, Record, RecordQuery, Store, StoredEvent, Version

FORMAT_VERSION = 1
"""The version of the JSON-lines format; an import refuses any other."""

KINDS = ("workspace", "api_key", "agent", "environment", "session", "eval_run")
"""Every record kind this server writes, in export order. The protocol lists the records
of one kind at a time and keeps no list of kinds, so a new kind must be added here
(tests/runtime/test_transfer.py checks this list against a database)."""

STREAM_KINDS = frozenset({"session", "eval_run"})
"""The kinds whose records own the event stream of the same id (checked like `KINDS`)."""

_PAGE = 200


# -- one session ----------------------------------------------------------------------


class InitialState(msgspec.Struct, kw_only=True):
    """A session's state before its first event: what a replay folds its log onto."""

    title: str | None = None
    metadata: dict[str, str] = {}
    created_at: str | None = None

    def state(self) -> SessionState:
        """The `SessionState` to fold the exported log onto."""
        return SessionState(
            title=self.title,
            metadata=dict(self.metadata),
            created_at=self.created_at,
            updated_at=self.created_at,
        )


class SessionExport(msgspec.Struct, kw_only=True):
    """An exported session: its session object, its state before the first event, and its
    log as the API serves it. Unknown fields are allowed (golden files add their scorers)."""

    session: msgspec.Raw
    """The session object as the API served it at export time, kept as its JSON: readers
    decode what they use (an import its `agent`, `title` and `metadata`; a replay the
    projected fields to compare), so a recording made by hand may hold only those."""
    initial: InitialState | None = None
    """None in recordings made before it was exported: a replay folds onto an empty state."""
    events: list[msgspec.Raw]
    """Each event's API JSON (with `id` and `processed_at`), kept as its bytes: an import
    checks them one by one, naming the index of a bad one."""


def session_export(
    session: bytes, initial: SessionState | None, created_at: str, log: Sequence[StoredEvent]
) -> SessionExport:
    """The export of a session: its session object (JSON), its state before the first event
    (None for records that did not keep it), its creation time and its stored events."""
    return SessionExport(
        session=msgspec.Raw(session),
        initial=InitialState(
            title=initial.title if initial else None,
            metadata=dict(initial.metadata) if initial else {},
            created_at=created_at,
        ),
        events=[msgspec.Raw(to_wire(s)) for s in log],
    )


# -- a whole installation: the lines --------------------------------------------------


class ExportedRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A record as exported: everything the store keeps of it but its revision."""

    kind: str
    id: str
    workspace_id: str
    created_at: str
    updated_at: str
    archived_at: str | None
    due: bool
    tags: dict[str, str]
    data: msgspec.Raw


class ExportedEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A stored event as exported: everything but its stream (the line's) and position."""

    id: str
    seq: int
    type: str
    recorded_at: str
    data: msgspec.Raw


class _Line(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True
):
    """One line of an installation export. Lines forbid unknown fields: an importer that
    dropped what a newer exporter wrote would not be lossless."""


class Header(_Line, tag="header", frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The first line. It alone allows unknown fields, so that a newer export is refused
    for its `version`, not for a field this version does not know."""

    version: int = FORMAT_VERSION
    exported_at: str


class RecordLine(_Line, tag="record", frozen=True, kw_only=True):
    """A record that owns no stream."""

    record: ExportedRecord


class VersionLine(_Line, tag="version", frozen=True, kw_only=True):
    """A version of the record exported before it."""

    kind: str
    id: str
    version: int
    created_at: str
    data: msgspec.Raw


class StreamLine(_Line, tag="stream", frozen=True, kw_only=True):
    """A record that owns a stream, and the whole stream in seq order."""

    record: ExportedRecord
    events: list[ExportedEvent]


Line = Header | RecordLine | VersionLine | StreamLine


class ImportCounts(msgspec.Struct, kw_only=True):
    """What an import wrote."""

    records: int = 0
    """Every record, those that own a stream included."""
    versions: int = 0
    streams: int = 0
    events: int = 0


# Sorted dict keys: tags come back from jsonb in another order than they were written.
_encode_line = msgspec.json.Encoder(order="deterministic").encode
_decode_line = msgspec.json.Decoder(Line).decode


# -- a whole installation: export -----------------------------------------------------


async def export_installation(
    store: Store,
    write_line: Callable[[bytes], Awaitable[None] | None],
    *,
    session_ids: Sequence[str] | None = None,
) -> int:
    """Write the installation in `store` as JSON lines (see the module docstring), each
    ending in a newline, to `write_line`; returns how many lines, the header included.

    With `session_ids`, only those sessions, and what they name: their workspaces, agents
    and environments (each with its versions; one deleted since is left out). That is a
    complete installation to import into an empty store: the sessions are listed under
    their agents, a send checks their environment, an eval re-runs them against their
    agent's versions. Not included: other sessions (a fork's original, a cassette re-run's
    recording), eval runs and API keys (reach the sessions with the server's admin key, or
    mint keys). Since an import never merges, two such exports that name one workspace
    (or agent, or environment) do not both import into one store: export the sessions
    together. Raises NotFoundError for an id that is not a session.
    """
    lines = 0

    async def write(line: Line) -> None:
        nonlocal lines
        done = write_line(_encode_line(line) + b"\n")
        if inspect.isawaitable(done):
            await done
        lines += 1

    await write(Header(exported_at=now_ts()))
    records = _every_record(store) if session_ids is None else _records_of(store, session_ids)
    async for listed in records:
        record = listed
        if listed.kind in STREAM_KINDS:
            agreed = await _stream_of(store, listed)
            if agreed is None:
                continue  # deleted since it was listed
            record, events = agreed
            await write(StreamLine(record=_exported(record), events=[_event(e) for e in events]))
        else:
            await write(RecordLine(record=_exported(record)))
        async for version in _versions(store, record):
            await write(
                VersionLine(
                    kind=version.kind,
                    id=version.id,
                    version=version.version,
                    created_at=version.created_at,
                    data=msgspec.Raw(version.data),
                )
            )
    return lines


async def _every_record(store: Store) -> AsyncIterator[Record]:
    for kind in KINDS:
        after: tuple[str, str] | None = None
        while True:
            query = RecordQuery(
                kind=kind, workspace_id=None, include_archived=True, after=after, limit=_PAGE
            )
            page = await store.list_records(query)
            for record in page:
                yield record
            if len(page) < _PAGE:
                break
            after = (page[-1].created_at, page[-1].id)


async def _records_of(store: Store, session_ids: Sequence[str]) -> AsyncIterator[Record]:
    """The sessions named, and the records they name, in the order of a whole export."""
    sessions = [await store.get_record("session", i) for i in dict.fromkeys(session_ids)]
    named: dict[str, set[str]] = {"workspace": set(), "agent": set(), "environment": set()}
    for session in sessions:
        named["workspace"].add(session.workspace_id)
        for kind in ("agent", "environment"):
            if f"{kind}_id" in session.tags:
                named[kind].add(session.tags[f"{kind}_id"])
    for kind in KINDS:
        if kind == "session":
            chosen = sessions
        else:
            chosen = []
            for record_id in named.get(kind, ()):
                try:
                    chosen.append(await store.get_record(kind, record_id))
                except NotFoundError:
                    continue  # deleted since (a session outlives its environment)
        for record in sorted(chosen, key=lambda r: (r.created_at, r.id)):
            yield record


async def _stream_of(store: Store, listed: Record) -> tuple[Record, list[StoredEvent]] | None:
    """The record and its whole stream as of one moment, or None once deleted.

    The record read between two reads of the stream that end at the same seq is the one
    projected from exactly those events: an append writes the two in one transaction."""
    events = list(await store.read(listed.id))
    while True:
        try:
            record = await store.get_record(listed.kind, listed.id)
        except NotFoundError:
            return None
        newer = await store.read(listed.id, EventQuery(after_seq=len(events)))
        if not newer:
            return record, events
        events.extend(newer)


async def _versions(store: Store, record: Record) -> AsyncIterator[Version]:
    after = 0
    while True:
        page = await store.list_versions(record.kind, record.id, after_version=after, limit=_PAGE)
        for version in page:
            yield version
        if len(page) < _PAGE:
            return
        after = page[-1].version


def _exported(record: Record) -> ExportedRecord:
    return ExportedRecord(
        kind=record.kind,
        id=record.id,
        workspace_id=record.workspace_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        archived_at=record.archived_at,
        due=record.due,
        tags=record.tags,
        data=msgspec.Raw(record.data),
    )


def _event(event: StoredEvent) -> ExportedEvent:
    return ExportedEvent(
        id=event.id,
        seq=event.seq,
        type=event.type,
        recorded_at=event.recorded_at,
        data=msgspec.Raw(event.data),
    )


# -- a whole installation: import -----------------------------------------------------


async def import_installation(
    store: Store, lines: AsyncIterable[bytes] | Iterable[bytes]
) -> ImportCounts:
    """Load an installation export (one line per item, newline or not) into `store`, as it
    was: same ids, bodies, tags, times, `due` flags, versions and events (see the module
    docstring for what is not kept).

    Raises InvalidInputError for a line that is not one of the format's (naming it) and
    ConflictError for an id the store holds already; what was written before stays.
    """
    counts = ImportCounts()
    header = False
    written: Record | None = None  # the last record written, for the versions after it
    number = 0
    async for raw in _each(lines):
        number += 1
        if not raw.strip():
            continue
        try:
            line = _decode_line(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInputError(f"line {number}: {exc}", code="invalid_export") from exc
        if not header:
            if not isinstance(line, Header):
                raise InvalidInputError(
                    f"line {number}: an installation export starts with its header line",
                    code="invalid_export",
                )
            if line.version != FORMAT_VERSION:
                raise InvalidInputError(
                    f"line {number}: export format version {line.version}; this server "
                    f"reads version {FORMAT_VERSION}",
                    code="unsupported_export_version",
                )
            header = True
            continue
        what = _described(line)
        try:
            match line:
                case Header():
                    raise InvalidInputError(
                        f"line {number}: a second header", code="invalid_export"
                    )
                case RecordLine(record=exported):
                    written = await store.save_record(_stored(exported))
                    counts.records += 1
                case StreamLine(record=exported, events=events):
                    record = _stored(exported)
                    await store.import_stream(record, [_stored_event(record.id, e) for e in events])
                    written = None
                    counts.records += 1
                    counts.streams += 1
                    counts.events += len(events)
                case VersionLine():
                    if written is None or (written.kind, written.id) != (line.kind, line.id):
                        written = await store.get_record(line.kind, line.id)
                    version = Version(
                        kind=line.kind,
                        id=line.id,
                        version=line.version,
                        data=bytes(line.data),
                        created_at=line.created_at,
                    )
                    written = await store.save_record(written, version=version)
                    counts.versions += 1
        except ConflictError as exc:
            raise ConflictError(
                f"line {number} ({what}): {exc.message}; an import never merges into what "
                "the store holds",
                code=exc.code,
            ) from exc
    if not header:
        raise InvalidInputError("not an installation export: no header line", code="invalid_export")
    return counts


def _described(line: Line) -> str:
    match line:
        case RecordLine(record=record) | StreamLine(record=record):
            return f"{record.kind} {record.id!r}"
        case VersionLine():
            return f"{line.kind} {line.id!r} version {line.version}"
    return "header"


async def _each(lines: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


def _stored(exported: ExportedRecord) -> Record:
    return Record(
        kind=exported.kind,
        id=exported.id,
        workspace_id=exported.workspace_id,
        data=bytes(exported.data),
        created_at=exported.created_at,
        updated_at=exported.updated_at,
        archived_at=exported.archived_at,
        tags=dict(exported.tags),
        due=exported.due,
    )


def _stored_event(session_id: str, exported: ExportedEvent) -> StoredEvent:
    return StoredEvent(
        session_id=session_id,
        seq=exported.seq,
        position=0,  # the importing store assigns it
        id=exported.id,
        type=exported.type,
        data=bytes(exported.data),
        recorded_at=exported.recorded_at,
    )
