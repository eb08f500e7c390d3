"""Workspace scoping of records: another workspace's resource is simply not found (404)."""

from __future__ import annotations

from sessiond.store.errors import NotFoundError
from sessiond.store.protocol import Record, Store


async def owned_record(store: Store, kind: str, record_id: str, workspace_id: str) -> Record:
    """The record, if it exists in this workspace; NotFoundError (`<kind>_not_found`) otherwise."""
    try:
        record = await store.get_record(kind, record_id)
    except NotFoundError:
        record = None
    if record is None or record.workspace_id != workspace_id:
        raise NotFoundError(f"{kind} {record_id!r} not found", code=f"{kind}_not_found")
    return record
