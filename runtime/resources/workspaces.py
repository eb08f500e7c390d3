"""Workspaces and API keys: who may call, and which workspace their resources live in.

A key is a 256-bit random secret, so a single SHA-256 is enough to store it: there is
nothing to brute-force, unlike a password, and the hash doubles as the record id that a
request's key is looked up by (one primary-key read per request). The secret itself is
shown once, at creation, and never stored, returned or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Literal

import msgspec

from sessiond.runtime.limits import MAX_NAME_CHARS, Name
from sessiond.runtime.resources.records import Change, Family
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from sessiond.store.protocol import Record, RecordQuery, Store

DEFAULT_WORKSPACE_ID = "wrkspc_default"
KEY_PREFIX = "sk-sd-"


class Workspace(msgspec.Struct, kw_only=True):
    """A tenant: every resource belongs to exactly one."""

    id: str
    name: str
    created_at: str
    type: str = "workspace"


class ApiKey(msgspec.Struct, kw_only=True):
    """A stored key: everything but the secret."""

    id: str
    workspace_id: str
    name: str | None
    created_at: str
    revoked_at: str | None = None
    """Set once the key is revoked; from then on it authenticates nothing."""
    type: str = "api_key"


class CreatedApiKey(msgspec.Struct, kw_only=True):
    """The one response that carries a key's secret."""

    id: str
    workspace_id: str
    name: str | None
    created_at: str
    secret: str
    type: str = "api_key"


class CreateWorkspace(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/workspaces` body."""

    name: Name


class CreateApiKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/api_keys` body: the workspace is required (a key silently made for the
    default workspace is a key for the wrong tenant)."""

    workspace_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    name: Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)] | None = None


REVOKED_TOPIC = "revoked"
"""Notification topic: the id of a revoked credential (open streams with it end)."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the workspace they act in, whether they hold the admin key, and for
    a self-hosted environment's credentials what they are limited to (api/auth.py)."""

    workspace_id: str
    key_id: str
    is_admin: bool = False
    scope: Literal["workspace", "environment", "session"] = "workspace"
    """`environment`: an environment key (its work queue and its sessions); `session`: a
    work item's sessions token (that session and that item)."""
    environment_id: str | None = None
    session_id: str | None = None
    work_id: str | None = None


def hash_key(secret: str) -> str:
    """The stored form of a key (see the module docstring for why SHA-256 suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Workspaces:
    """Workspaces, keys, and resolving a presented key to a Principal."""

    def __init__(self, store: Store, admin_key: str | None = None) -> None:
        self._store = store
        self._keys = Family(store, "api_key", ApiKey)
        self._admin_hash = hash_key(admin_key) if admin_key else None

    async def ensure_default(self) -> None:
        """Create the default workspace on first start (idempotent)."""
        try:
            await self._store.get_record("workspace", DEFAULT_WORKSPACE_ID)
        except NotFoundError:
            try:
                await self._save_workspace(DEFAULT_WORKSPACE_ID, "default")
            except ConflictError:
                pass  # another process starting on the same database made it first

    async def create_workspace(self, params: CreateWorkspace) -> Workspace:
        """Create a workspace."""
        if not params.name.strip():
            raise InvalidInputError("name: must not be empty")
        return await self._save_workspace(new_id("wrkspc"), params.name)

    async def get_workspace(self, workspace_id: str) -> Workspace:
        """Raises NotFoundError (`workspace_not_found`)."""
        record = await self._store.get_record("workspace", workspace_id)
        return msgspec.json.decode(record.data, type=Workspace)

    async def create_key(self, params: CreateApiKey) -> CreatedApiKey:
        """Mint a key for a workspace; the secret is in the result and nowhere else."""
        await self.get_workspace(params.workspace_id)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        now = now_ts()
        key = ApiKey(
            id=new_id("apikey"), workspace_id=params.workspace_id, name=params.name, created_at=now
        )
        record = Record(
            kind="api_key",
            id=hash_key(secret),
            workspace_id=params.workspace_id,
            data=msgspec.json.encode(key),
            created_at=now,
            updated_at=now,
        )
        await self._store.save_record(record)
        return CreatedApiKey(
            id=key.id, workspace_id=key.workspace_id, name=key.name, created_at=now, secret=secret
        )

    async def bootstrap_key(self) -> CreatedApiKey | None:
        """On a fresh install with no admin key, mint the first key so the server is usable."""
        if self._admin_hash is not None:
            return None
        query = RecordQuery(
            kind="api_key", workspace_id=DEFAULT_WORKSPACE_ID, include_archived=True, limit=1
        )
        if await self._store.list_records(query):
            return None
        # Processes starting together on one fresh database: one of them mints the key.
        lease = await self._store.acquire_lease("bootstrap-key", new_id("boot"), 60)
        if lease is None:
            return None
        try:
            if await self._store.list_records(query):
                return None
            return await self.create_key(
                CreateApiKey(workspace_id=DEFAULT_WORKSPACE_ID, name="bootstrap")
            )
        finally:
            await self._store.release_lease(lease)

    async def list_keys(self, query: RecordQuery) -> list[ApiKey]:
        """A page of keys (never their secrets)."""
        records = await self._store.list_records(query)
        return [_decode_key(r.data) for r in records]

    async def _key_record(self, key_id: str) -> Record:
        """The stored record of the key with public id `key_id` (keys are stored under the
        hash of their secret, so this pages through them: there are few)."""
        after: tuple[str, str] | None = None
        while True:
            query = RecordQuery(
                kind="api_key", workspace_id=None, include_archived=True, after=after, limit=200
            )
            records = await self._store.list_records(query)
            for record in records:
                if _decode_key(record.data).id == key_id:
                    return record
            if len(records) < 200:
                raise NotFoundError(f"api_key {key_id!r} not found", code="api_key_not_found")
            after = (records[-1].created_at, records[-1].id)

    async def get_key(self, key_id: str) -> ApiKey:
        """One key by its public id."""
        return _decode_key((await self._key_record(key_id)).data)

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key: every request with it fails from the moment this returns (the
        record cache drops a record before its write is acknowledged)."""
        record = await self._key_record(key_id)

        def change(key: ApiKey, record: Record) -> Change[ApiKey] | None:
            if key.revoked_at is not None:
                return None
            now = now_ts()
            return Change(value=msgspec.structs.replace(key, revoked_at=now), archived_at=now)

        return await self._keys.modify(record.workspace_id, record.id, change)

    async def authenticate(self, secret: str | None, workspace_header: str | None) -> Principal:
        """Resolve a presented key, honouring `anthropic-workspace-id` where it applies."""
        if not secret:
            raise AuthenticationError(
                "missing API key: send `x-api-key` or `Authorization: Bearer`",
                code="missing_api_key",
            )
        digest = hash_key(secret)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            workspace_id = workspace_header or DEFAULT_WORKSPACE_ID
            await self.get_workspace(workspace_id)
            return Principal(workspace_id=workspace_id, key_id="admin", is_admin=True)
        try:
            record = await self._store.get_record("api_key", digest)
        except NotFoundError:
            raise AuthenticationError("invalid API key", code="invalid_api_key") from None
        key = _decode_key(record.data)
        if key.revoked_at is not None:
            raise AuthenticationError("this API key was revoked", code="revoked_api_key")
        if workspace_header and workspace_header != key.workspace_id:
            raise PermissionDeniedError(
                "this key belongs to another workspace than `anthropic-workspace-id` names",
                code="workspace_mismatch",
            )
        return Principal(workspace_id=key.workspace_id, key_id=key.id)

    async def _save_workspace(self, workspace_id: str, name: str) -> Workspace:
        now = now_ts()
        workspace = Workspace(id=workspace_id, name=name, created_at=now)
        record = Record(
            kind="workspace",
            id=workspace_id,
            workspace_id=workspace_id,
            data=msgspec.json.encode(workspace),
            created_at=now,
            updated_at=now,
        )
        await self._store.save_record(record)
        return workspace


_decode_key = msgspec.json.Decoder(ApiKey).decode
