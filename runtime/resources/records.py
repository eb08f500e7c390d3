"""One resource family's records, with the plumbing every family shares: a get scoped to
the caller's workspace (another workspace's record is simply not found), a page of a
query, a create, a delete, and a modify that re-reads and retries when a concurrent write
moved the record's revision (one retry policy for every family).

A family holds one wire Struct per record (`Family(store, "environment", Environment)`);
what a modify changes is decided by the caller's `change` function, given the current
value and its record, which returns a `Change` (or None: nothing to write) or raises.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from sessiond.store.clock import now_ts
from sessiond.store.errors import ConflictError, NotFoundError
from sessiond.store.protocol import Record, RecordQuery, Store, Version

T = TypeVar("T")

RETRIES = 20
"""How often a modify re-reads and retries after a concurrent write, in every family."""
_MOVED = frozenset({"revision_conflict", "version_exists"})


async def owned_record(store: Store, kind: str, record_id: str, workspace_id: str) -> Record:
    """The record, if it exists in this workspace; NotFoundError (`<kind>_not_found`)
    otherwise: another workspace's resource is simply not found (404)."""
    try:
        record = await store.get_record(kind, record_id)
    except NotFoundError:
        record = None
    if record is None or record.workspace_id != workspace_id:
        raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
    return record


class Change(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """What a modify writes: the new value, and what else of the record changes."""

    value: T
    archived_at: str | None | msgspec.UnsetType = msgspec.UNSET
    tags: Mapping[str, str] | None = None
    version: int | None = None
    """Also store the new value as this immutable version (agents)."""


class Family(Generic[T]):
    """The records of one kind, decoded as `cls`."""

    def __init__(self, store: Store, kind: str, cls: type[T]) -> None:
        self.store = store
        self.kind = kind
        self._decoder = msgspec.json.Decoder(cls)
        self._encoder = msgspec.json.Encoder()

    def decode(self, data: bytes) -> T:
        """A stored value."""
        return self._decoder.decode(data)

    def encode(self, value: T) -> bytes:
        """A value to store."""
        return self._encoder.encode(value)

    async def owned(self, workspace_id: str, record_id: str) -> Record:
        """The record, if it exists in this workspace; NotFoundError
        (`<kind>_not_found`) otherwise."""
        return await owned_record(self.store, self.kind, record_id, workspace_id)

    async def get(self, workspace_id: str, record_id: str) -> T:
        """The value, if it exists in this workspace."""
        return self.decode((await self.owned(workspace_id, record_id)).data)

    async def get_any(self, record_id: str) -> T:
        """The value whatever its workspace (for the server's own reads)."""
        return self.decode((await self.store.get_record(self.kind, record_id)).data)

    async def page(self, query: RecordQuery) -> builtins.list[T]:
        """The values of one page of a query (of this kind)."""
        return [self.decode(r.data) for r in await self.store.list_records(query)]

    async def create(
        self,
        workspace_id: str,
        record_id: str,
        value: T,
        *,
        now: str | None = None,
        tags: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> T:
        """Store a new record (and version `version` of it); ConflictError if the id is
        taken."""
        stamp = now or now_ts()
        data = self.encode(value)
        record = Record(
            kind=self.kind,
            id=record_id,
            workspace_id=workspace_id,
            data=data,
            created_at=stamp,
            updated_at=stamp,
            tags=dict(tags or {}),
        )
        stored = None
        if version is not None:
            stored = Version(
                kind=self.kind, id=record_id, version=version, data=data, created_at=stamp
            )
        await self.store.save_record(record, version=stored)
        return value

    async def modify(
        self,
        workspace_id: str,
        record_id: str,
        change: Callable[[T, Record], Change[T] | None],
        *,
        on_moved: Callable[[], None] | None = None,
    ) -> T:
        """Apply `change` to the current value and save it; when a concurrent write got
        there first, read again and apply it again (`on_moved`, if given, may raise
        instead: a write conditional on what the caller saw)."""
        for _ in range(RETRIES):
            record = await self.owned(workspace_id, record_id)
            current = self.decode(record.data)
            result = change(current, record)
            if result is None:
                return current
            try:
                await self._save(record, result)
            except ConflictError as exc:
                if exc.code not in _MOVED:
                    raise
                if on_moved is not None:
                    on_moved()
                continue
            return result.value
        raise ConflictError(
            f"{self.kind} {record_id} is being changed concurrently; retry",
            code="update_contention",
            retryable=True,
        )

    async def delete(self, workspace_id: str, record_id: str) -> None:
        """Delete the record (and its versions), if it is this workspace's."""
        await self.owned(workspace_id, record_id)
        await self.store.delete_record(self.kind, record_id)

    async def _save(self, record: Record, result: Change[T]) -> None:
        stamp = now_ts()
        data = self.encode(result.value)
        changes: dict[str, Any] = {"data": data, "updated_at": stamp}
        if not isinstance(result.archived_at, msgspec.UnsetType):
            changes["archived_at"] = result.archived_at
        if result.tags is not None:
            changes["tags"] = dict(result.tags)
        version = None
        if result.version is not None:
            version = Version(
                kind=self.kind, id=record.id, version=result.version, data=data, created_at=stamp
            )
        await self.store.save_record(msgspec.structs.replace(record, **changes), version=version)
