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

import msgspec

from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import (
    AuthenticationError,
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

    name: str


class CreateApiKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/api_keys` body."""

    workspace_id: str = DEFAULT_WORKSPACE_ID
    name: str | None = None


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the workspace they act in, and whether they hold the admin key."""

    workspace_id: str
    key_id: str
    is_admin: bool = False


def hash_key(secret: str) -> str:
    """The stored form of a key (see the module docstring for why SHA-256 suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Workspaces:
    """Workspaces, keys, and resolving a presented key to a Principal."""

    def __init__(self, store: Store, admin_key: str | None = None) -> None:
        self._store = store
        self._admin_hash = hash_key(admin_key) if admin_key else None

    async def ensure_default(self) -> None:
        """Create the default workspace on first start (idempotent)."""
        try:
            await self._store.get_record("workspace", DEFAULT_WORKSPACE_ID)
        except NotFoundError:
            await self._save_workspace(DEFAULT_WORKSPACE_ID, "default")

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
        query = RecordQuery(kind="api_key", workspace_id=DEFAULT_WORKSPACE_ID, limit=1)
        if await self._store.list_records(query):
            return None
        return await self.create_key(CreateApiKey(name="bootstrap"))

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
        key = msgspec.json.decode(record.data, type=ApiKey)
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
