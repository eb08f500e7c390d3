"""Environment keys: the standing credential of a self-hosted environment's workers.

Our extension of the contract (the hosted API issues them in its console): an API key of
the workspace mints one with `POST /v1/environments/{id}/keys` (the secret is in that
answer and nowhere else), lists them, and revokes one with `POST …/keys/{key_id}/revoke`.
A key is stored under the SHA-256 of its secret, like API keys. It lets its bearer poll
and serve that one environment's work queue and read and answer the sessions on that
environment, and nothing else of the workspace (api/auth.py).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Literal

import msgspec

from sessiond.runtime.resources.environments import EnvironmentService, SelfHostedConfig
from sessiond.runtime.resources.records import Change, Family
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import InvalidInputError, NotFoundError
from sessiond.store.protocol import Record, RecordQuery, Store

KIND = "environment_key"
PREFIX = "sk-env-"


class EnvironmentKey(msgspec.Struct, kw_only=True):
    """The wire `environment_key` object (never its secret)."""

    id: str
    environment_id: str
    name: str | None
    created_at: str
    revoked_at: str | None = None
    type: Literal["environment_key"] = "environment_key"


class CreatedEnvironmentKey(EnvironmentKey, kw_only=True):
    """The answer to a create: the only place the secret appears."""

    secret: str


class CreateEnvironmentKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/environments/{id}/keys` body."""

    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None


_decode = msgspec.json.Decoder(EnvironmentKey).decode
_encode = msgspec.json.Encoder().encode


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class EnvironmentKeys:
    """Mint, list, revoke and resolve environment keys."""

    def __init__(self, store: Store, environments: EnvironmentService) -> None:
        self._store = store
        self._environments = environments
        self._records = Family(store, KIND, EnvironmentKey)

    async def create(
        self, workspace_id: str, environment_id: str, params: CreateEnvironmentKey
    ) -> CreatedEnvironmentKey:
        """A new key for a self-hosted environment of this workspace."""
        environment = await self._environments.retrieve(workspace_id, environment_id)
        if not isinstance(environment.config, SelfHostedConfig):
            raise InvalidInputError(
                f"environment {environment_id} is not self-hosted: its tools run here, so it "
                "has no workers to give a key to",
                code="not_self_hosted",
            )
        secret = PREFIX + secrets.token_urlsafe(32)
        now = now_ts()
        key = EnvironmentKey(
            id=new_id("envkey"), environment_id=environment_id, name=params.name, created_at=now
        )
        await self._store.save_record(
            Record(
                kind=KIND,
                id=_hash(secret),
                workspace_id=workspace_id,
                data=_encode(key),
                created_at=now,
                updated_at=now,
                tags={"environment_id": environment_id, "key_id": key.id},
            )
        )
        return CreatedEnvironmentKey(**msgspec.structs.asdict(key), secret=secret)

    async def list(self, query: RecordQuery) -> list[EnvironmentKey]:
        """A page of keys (the API tags the query with the environment)."""
        return [_decode(r.data) for r in await self._store.list_records(query)]

    async def revoke(self, workspace_id: str, environment_id: str, key_id: str) -> EnvironmentKey:
        """Revoke: every request with the key fails from the moment this returns."""
        await self._environments.retrieve(workspace_id, environment_id)
        record = await self._record(workspace_id, environment_id, key_id)

        def change(key: EnvironmentKey, record: Record) -> Change[EnvironmentKey] | None:
            if key.revoked_at is not None:
                return None
            now = now_ts()
            return Change(value=msgspec.structs.replace(key, revoked_at=now), archived_at=now)

        return await self._records.modify(workspace_id, record.id, change)

    async def resolve(self, secret: str) -> tuple[str, EnvironmentKey] | None:
        """(workspace id, key) for a presented live key, else None."""
        if not secret.startswith(PREFIX):
            return None
        try:
            record = await self._store.get_record(KIND, _hash(secret))
        except NotFoundError:
            return None
        key = _decode(record.data)
        if key.revoked_at is not None:
            return None
        return record.workspace_id, key

    async def revoked(self, environment_id: str, key_id: str) -> bool:
        """Whether the key is revoked (or gone)."""
        try:
            record = await self._record(None, environment_id, key_id)
        except NotFoundError:
            return True
        return _decode(record.data).revoked_at is not None

    async def _record(self, workspace_id: str | None, environment_id: str, key_id: str) -> Record:
        query = RecordQuery(
            kind=KIND,
            workspace_id=workspace_id,
            tags={"environment_id": frozenset({environment_id}), "key_id": frozenset({key_id})},
            include_archived=True,
            limit=1,
        )
        records = await self._store.list_records(query)
        if not records:
            raise NotFoundError(f"environment key {key_id!r} not found", code="key_not_found")
        return records[0]
