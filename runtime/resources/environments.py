"""Environments: validated configs a session runs in (what they do to tools comes later).

Unlike other metadata patches, an environment's treats `""` like `null`: it deletes the key.
Timestamps are plain strings on this object in the SDK; ours are canonical RFC 3339.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from sessiond.runtime.limits import Description, Name
from sessiond.runtime.resources.agent_config import check_metadata, patch_metadata
from sessiond.runtime.resources.records import Change, Family
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import InvalidInputError
from sessiond.store.protocol import Record, RecordQuery, Store

KIND = "environment"


class _Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies refuse unknown fields."""


class Unrestricted(_Params, tag="unrestricted", tag_field="type"):
    """Any outbound host."""


class LimitedParams(_Params, tag="limited", tag_field="type"):
    """Only listed hosts (and optionally MCP servers and package registries)."""

    allowed_hosts: list[str] | None = None
    allow_mcp_servers: bool | None = None
    allow_package_managers: bool | None = None


class PackagesParams(_Params):
    """Packages to install, per manager."""

    type: Literal["packages"] | None = None
    apt: list[str] | None = None
    cargo: list[str] | None = None
    gem: list[str] | None = None
    go: list[str] | None = None
    npm: list[str] | None = None
    pip: list[str] | None = None


class CloudConfigParams(_Params, tag="cloud", tag_field="type"):
    """A server-run sandbox; omitted parts keep their current (or default) value."""

    networking: Unrestricted | LimitedParams | None = None
    packages: PackagesParams | None = None


class SelfHostedConfigParams(_Params, tag="self_hosted", tag_field="type"):
    """Tools run by the client's own workers."""


ConfigParams = CloudConfigParams | SelfHostedConfigParams


class Limited(msgspec.Struct, kw_only=True, tag="limited", tag_field="type"):
    """Resolved limited networking: every field present."""

    allowed_hosts: list[str]
    allow_mcp_servers: bool
    allow_package_managers: bool


class Packages(msgspec.Struct, kw_only=True):
    """Resolved packages: every list present."""

    type: Literal["packages"] = "packages"
    apt: list[str] = []
    cargo: list[str] = []
    gem: list[str] = []
    go: list[str] = []
    npm: list[str] = []
    pip: list[str] = []


class CloudConfig(msgspec.Struct, kw_only=True, tag="cloud", tag_field="type"):
    """Resolved cloud config."""

    networking: Unrestricted | Limited
    packages: Packages


class SelfHostedConfig(msgspec.Struct, kw_only=True, tag="self_hosted", tag_field="type"):
    """Resolved self-hosted config."""


Config = CloudConfig | SelfHostedConfig


class CreateEnvironment(_Params):
    """`POST /v1/environments` body."""

    name: Name
    config: ConfigParams | None = None
    description: Description | None = None
    metadata: dict[str, str] = {}
    scope: Literal["organization", "account"] | None = None


class UpdateEnvironment(_Params):
    """`POST /v1/environments/{id}` body (tri-state)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    config: ConfigParams | msgspec.UnsetType = msgspec.UNSET
    description: Description | None | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, str | None] | None | msgspec.UnsetType = msgspec.UNSET
    scope: Literal["organization", "account"] | None | msgspec.UnsetType = msgspec.UNSET


class Environment(msgspec.Struct, kw_only=True):
    """The wire `environment` object."""

    id: str
    name: str
    description: str | None
    metadata: dict[str, str]
    config: Config
    created_at: str
    updated_at: str
    archived_at: str | None = None
    scope: Literal["organization", "account"] | None = None
    type: Literal["environment"] = "environment"


class EnvironmentDeleted(msgspec.Struct, kw_only=True):
    """`DELETE /v1/environments/{id}` response."""

    id: str
    type: Literal["environment_deleted"] = "environment_deleted"


_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"  # name
    r"(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?"  # extras
    r"(?:\s*(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+"  # version specifiers
    r"(?:\s*,\s*(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+)*)?$"
)
_NPM_PACKAGE = re.compile(
    r"^(?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*(?:@[A-Za-z0-9.^~<>=*|+ -]+)?$"
)


def _check_package_entries(packages: Packages) -> None:
    """Entries are requirements (a name, extras, version specifiers), never URLs, paths or
    options: the server's installer fetches them from the operator's indexes."""
    for entry in packages.pip:
        if not _REQUIREMENT.match(entry.strip()):
            raise InvalidInputError(
                f"config.packages.pip: {entry!r} is not a requirement (a name with optional "
                "extras and version specifiers; no URLs, paths or options)",
                code="invalid_config",
            )
    for entry in packages.npm:
        if not _NPM_PACKAGE.match(entry.strip()):
            raise InvalidInputError(
                f"config.packages.npm: {entry!r} is not a package name with an optional version",
                code="invalid_config",
            )


_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


def resolve_config(params: ConfigParams | None, current: Config | None = None) -> Config:
    """Resolve a config; on update, omitted parts of a cloud config keep their value."""
    if isinstance(params, SelfHostedConfigParams):
        return SelfHostedConfig()
    base = (
        current
        if isinstance(current, CloudConfig)
        else CloudConfig(networking=Unrestricted(), packages=Packages())
    )
    if params is None:
        return base
    networking: Unrestricted | Limited = base.networking
    if isinstance(params.networking, Unrestricted):
        networking = Unrestricted()
    elif isinstance(params.networking, LimitedParams):
        given = params.networking
        networking = Limited(
            allowed_hosts=given.allowed_hosts or [],
            allow_mcp_servers=bool(given.allow_mcp_servers),
            allow_package_managers=bool(given.allow_package_managers),
        )
    packages = base.packages
    if params.packages is not None:
        changes = {
            m: getattr(params.packages, m)
            for m in _MANAGERS
            if getattr(params.packages, m) is not None
        }
        packages = msgspec.structs.replace(packages, **changes)
    if isinstance(networking, Limited) and not networking.allow_package_managers:
        if any(getattr(packages, m) for m in _MANAGERS):
            raise InvalidInputError(
                "config: packages need networking.allow_package_managers under limited networking"
            )
    _check_package_entries(packages)
    return CloudConfig(networking=networking, packages=packages)


class EnvironmentService:
    """Create, read, list, update, archive and delete environments."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.records = Family(store, KIND, Environment)

    async def create(self, workspace_id: str, params: CreateEnvironment) -> Environment:
        """A new environment."""
        check_metadata(params.metadata)
        now = now_ts()
        environment = Environment(
            id=new_id("env"),
            name=params.name,
            description=params.description,
            metadata=params.metadata,
            config=resolve_config(params.config),
            created_at=now,
            updated_at=now,
            scope=params.scope,
        )
        return await self.records.create(workspace_id, environment.id, environment, now=now)

    async def get(self, environment_id: str) -> Environment:
        """One environment by id, whatever its workspace (the engine's read for a session
        already checked to be in it). Raises NotFoundError."""
        return await self.records.get_any(environment_id)

    async def retrieve(self, workspace_id: str, environment_id: str) -> Environment:
        """One environment."""
        return await self.records.get(workspace_id, environment_id)

    async def list(self, query: RecordQuery) -> list[Environment]:
        """A page of environments."""
        return await self.records.page(query)

    async def update(
        self, workspace_id: str, environment_id: str, params: UpdateEnvironment
    ) -> Environment:
        """Apply a tri-state update."""

        def change(current: Environment, record: Record) -> Change[Environment]:
            if current.archived_at is not None:
                raise InvalidInputError(
                    f"environment {environment_id!r} is archived", code="environment_archived"
                )
            changes: dict[str, object] = {}
            if params.name is not msgspec.UNSET:
                changes["name"] = params.name
            if params.description is not msgspec.UNSET:
                changes["description"] = params.description
            if params.scope is not msgspec.UNSET:
                changes["scope"] = params.scope
            if params.metadata is not msgspec.UNSET:
                changes["metadata"] = (
                    {}
                    if params.metadata is None
                    else patch_metadata(current.metadata, params.metadata, empty_deletes=True)
                )
            if params.config is not msgspec.UNSET:
                new_type = (
                    "cloud" if isinstance(params.config, CloudConfigParams) else "self_hosted"
                )
                old_type = "cloud" if isinstance(current.config, CloudConfig) else "self_hosted"
                if new_type != old_type:
                    raise InvalidInputError(
                        f"config: cannot change the type from {old_type} to {new_type}",
                        code="invalid_config_type_change",
                    )
                changes["config"] = resolve_config(params.config, current.config)
            updated = msgspec.structs.replace(current, updated_at=now_ts(), **changes)
            return Change(value=updated)

        return await self.records.modify(workspace_id, environment_id, change)

    async def archive(self, workspace_id: str, environment_id: str) -> Environment:
        """Archive: no new sessions may use it."""

        def change(current: Environment, record: Record) -> Change[Environment] | None:
            if current.archived_at is not None:
                return None
            now = now_ts()
            archived = msgspec.structs.replace(current, archived_at=now, updated_at=now)
            return Change(value=archived, archived_at=now)

        return await self.records.modify(workspace_id, environment_id, change)

    async def delete(self, workspace_id: str, environment_id: str) -> EnvironmentDeleted:
        """Delete (sessions already on it keep their copy of its id)."""
        await self.records.delete(workspace_id, environment_id)
        return EnvironmentDeleted(id=environment_id)

    async def require_usable(self, workspace_id: str, environment_id: str) -> Environment:
        """The environment for a new session: it must exist here and not be archived."""
        environment = await self.retrieve(workspace_id, environment_id)
        if environment.archived_at is not None:
            raise InvalidInputError(
                f"environment {environment_id!r} is archived", code="environment_archived"
            )
        return environment
