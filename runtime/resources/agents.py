"""Agents: immutable versions. Every change writes version N+1; version N stays readable.

The record (kind `agent`) holds the latest version; each version is also stored on its
own, in the same transaction (`save_record(record, version=…)`), so "latest" and
"version N" can never disagree. A session pins the `SessionAgent` snapshot it started with.
"""

from __future__ import annotations

import builtins
from typing import Literal

import msgspec

from sessiond.runtime.limits import Description, Name, SystemPrompt, VersionNumber
from sessiond.runtime.resources.agent_config import (
    AnthropicSkillParams,
    CustomSkillParams,
    ExecutionIdentity,
    MCPServer,
    ModelConfig,
    ModelParams,
    MultiagentConfig,
    ServiceAccount,
    Skill,
    Tool,
    ToolParams,
    check_metadata,
    patch_metadata,
    resolve_model,
    resolve_skills,
    resolve_tools,
)
from sessiond.runtime.resources.records import Change, Family
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import ConflictError, InvalidInputError, NotFoundError
from sessiond.store.protocol import Record, RecordQuery, Store

KIND = "agent"

SkillRef = AnthropicSkillParams | CustomSkillParams


class CreateAgent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/agents` body."""

    name: Name
    model: str | ModelParams
    description: Description | None = None
    system: SystemPrompt | None = None
    tools: list[ToolParams] = []
    mcp_servers: list[MCPServer] = []
    skills: list[SkillRef] = []
    metadata: dict[str, str] = {}
    execution_identity: ExecutionIdentity | None = None
    multiagent: MultiagentConfig | None = None


class UpdateAgent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/agents/{id}` body: absent keeps, null clears (where allowed), a value replaces."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    model: str | ModelParams | msgspec.UnsetType = msgspec.UNSET
    description: Description | None | msgspec.UnsetType = msgspec.UNSET
    system: SystemPrompt | None | msgspec.UnsetType = msgspec.UNSET
    tools: list[ToolParams] | None | msgspec.UnsetType = msgspec.UNSET
    mcp_servers: list[MCPServer] | None | msgspec.UnsetType = msgspec.UNSET
    skills: list[SkillRef] | None | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, str | None] | msgspec.UnsetType = msgspec.UNSET
    execution_identity: ExecutionIdentity | None | msgspec.UnsetType = msgspec.UNSET
    multiagent: MultiagentConfig | None | msgspec.UnsetType = msgspec.UNSET
    version: VersionNumber | msgspec.UnsetType = msgspec.UNSET


class Agent(msgspec.Struct, kw_only=True):
    """The wire `agent` object (one version of it)."""

    id: str
    name: str
    description: str | None
    system: str | None
    model: ModelConfig
    tools: list[Tool]
    mcp_servers: list[MCPServer]
    skills: list[Skill]
    execution_identity: ExecutionIdentity
    multiagent: MultiagentConfig | None
    metadata: dict[str, str]
    version: int
    created_at: str
    updated_at: str
    archived_at: str | None = None
    type: Literal["agent"] = "agent"


class SessionAgent(msgspec.Struct, kw_only=True):
    """The agent snapshot a session pins (`session.agent`)."""

    id: str
    version: int
    name: str
    description: str | None
    system: str | None
    model: ModelConfig
    tools: list[Tool]
    mcp_servers: list[MCPServer]
    skills: list[Skill]
    execution_identity: ExecutionIdentity
    multiagent: MultiagentConfig | None
    type: Literal["agent"] = "agent"


class AgentRef(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag="agent", tag_field="type"
):
    """`{"type": "agent", "id", "version"?}`."""

    id: str
    version: VersionNumber | None = None


class AgentWithOverrides(
    msgspec.Struct,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="agent_with_overrides",
    tag_field="type",
):
    """A reference plus per-session replacements (the agent itself is unchanged)."""

    id: str
    version: VersionNumber | None = None
    model: str | ModelParams | msgspec.UnsetType = msgspec.UNSET
    system: SystemPrompt | None | msgspec.UnsetType = msgspec.UNSET
    tools: list[ToolParams] | msgspec.UnsetType = msgspec.UNSET
    mcp_servers: list[MCPServer] | msgspec.UnsetType = msgspec.UNSET
    skills: list[SkillRef] | msgspec.UnsetType = msgspec.UNSET


SessionAgentRef = str | AgentRef | AgentWithOverrides

_decode_agent = msgspec.json.Decoder(Agent).decode
_decode_ref = msgspec.json.Decoder(SessionAgentRef).decode
_encode = msgspec.json.Encoder().encode
_CONFIG_FIELDS = (
    "name",
    "description",
    "system",
    "model",
    "tools",
    "mcp_servers",
    "skills",
    "execution_identity",
    "multiagent",
    "metadata",
)


def session_agent(agent: Agent) -> SessionAgent:
    """The snapshot a session pins."""
    return SessionAgent(
        id=agent.id,
        version=agent.version,
        name=agent.name,
        description=agent.description,
        system=agent.system,
        model=agent.model,
        tools=agent.tools,
        mcp_servers=agent.mcp_servers,
        skills=agent.skills,
        execution_identity=agent.execution_identity,
        multiagent=agent.multiagent,
    )


def _same_config(a: Agent, b: Agent) -> bool:
    return all(_encode(getattr(a, f)) == _encode(getattr(b, f)) for f in _CONFIG_FIELDS)


def apply_update(current: Agent, params: UpdateAgent, now: str) -> Agent:
    """The next version's content (not yet numbered); pure."""
    changes: dict[str, object] = {}
    if params.name is not msgspec.UNSET:
        changes["name"] = params.name
    if params.model is not msgspec.UNSET:
        changes["model"] = resolve_model(params.model)
    if params.description is not msgspec.UNSET:
        changes["description"] = params.description or None
    if params.system is not msgspec.UNSET:
        changes["system"] = params.system or None
    tools = current.tools
    servers = current.mcp_servers
    if params.mcp_servers is not msgspec.UNSET:
        servers = params.mcp_servers or []
        changes["mcp_servers"] = servers
    if params.tools is not msgspec.UNSET:
        tools = resolve_tools(params.tools or [], servers)
        changes["tools"] = tools
    elif params.mcp_servers is not msgspec.UNSET:
        _check_servers_still_referenced(tools, servers)
    if params.skills is not msgspec.UNSET:
        changes["skills"] = resolve_skills(params.skills or [])
    if params.metadata is not msgspec.UNSET:
        changes["metadata"] = patch_metadata(current.metadata, params.metadata)
    if params.execution_identity is not msgspec.UNSET:
        changes["execution_identity"] = params.execution_identity or ServiceAccount()
    if params.multiagent is not msgspec.UNSET:
        changes["multiagent"] = params.multiagent
    return msgspec.structs.replace(current, updated_at=now, **changes)


def _check_servers_still_referenced(tools: list[Tool], servers: list[MCPServer]) -> None:
    names = {s.name for s in servers}
    used = {t.mcp_server_name for t in tools if getattr(t, "mcp_server_name", None)}  # type: ignore[union-attr]
    if used - names or names - used:
        raise InvalidInputError("mcp_servers: every server needs an mcp_toolset and vice versa")


class AgentService:
    """Create, version, read, list and archive agents; resolve a session's agent."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.records = Family(store, KIND, Agent)

    async def _record(self, workspace_id: str, agent_id: str) -> Record:
        return await self.records.owned(workspace_id, agent_id)

    async def create(self, workspace_id: str, params: CreateAgent) -> Agent:
        """Version 1 of a new agent."""
        check_metadata(params.metadata)
        now = now_ts()
        agent = Agent(
            id=new_id("agent"),
            name=params.name,
            description=params.description,
            system=params.system,
            model=resolve_model(params.model),
            tools=resolve_tools(params.tools, params.mcp_servers),
            mcp_servers=params.mcp_servers,
            skills=resolve_skills(params.skills),
            execution_identity=params.execution_identity or ServiceAccount(),
            multiagent=params.multiagent,
            metadata=params.metadata,
            version=1,
            created_at=now,
            updated_at=now,
        )
        return await self.records.create(workspace_id, agent.id, agent, now=now, version=1)

    async def retrieve(self, workspace_id: str, agent_id: str, version: int | None = None) -> Agent:
        """The latest version, or version `version`."""
        latest = await self.records.get(workspace_id, agent_id)
        if version is None or version == latest.version:
            return latest
        try:
            stored = await self._store.get_version(KIND, agent_id, version)
        except NotFoundError:
            raise NotFoundError(
                f"agent {agent_id!r} has no version {version}", code="agent_version_not_found"
            ) from None
        return msgspec.structs.replace(_decode_agent(stored.data), archived_at=latest.archived_at)

    async def list(self, query: RecordQuery) -> list[Agent]:
        """A page of latest versions."""
        return await self.records.page(query)

    async def list_versions(
        self, workspace_id: str, agent_id: str, *, after_version: int, limit: int
    ) -> builtins.list[Agent]:
        """Versions in ascending order."""
        await self._record(workspace_id, agent_id)
        versions = await self._store.list_versions(
            KIND, agent_id, after_version=after_version, limit=limit
        )
        return [_decode_agent(v.data) for v in versions]

    async def update(self, workspace_id: str, agent_id: str, params: UpdateAgent) -> Agent:
        """Write version N+1 (or nothing, for a no-op); `version` makes it conditional."""

        def change(current: Agent, record: Record) -> Change[Agent] | None:
            if current.archived_at is not None:
                raise InvalidInputError(f"agent {agent_id!r} is archived", code="agent_archived")
            if params.version is not msgspec.UNSET and params.version != current.version:
                raise ConflictError(
                    f"agent {agent_id!r} is at version {current.version}, not {params.version}",
                    code="version_mismatch",
                )
            candidate = apply_update(current, params, now_ts())
            if _same_config(candidate, current):
                return None
            nxt = msgspec.structs.replace(candidate, version=current.version + 1)
            return Change(value=nxt, version=nxt.version)

        def moved() -> None:
            if params.version is not msgspec.UNSET:  # conditional: the caller saw an older one
                raise ConflictError(
                    f"agent {agent_id!r} changed concurrently", code="version_mismatch"
                )

        return await self.records.modify(workspace_id, agent_id, change, on_moved=moved)

    async def archive(self, workspace_id: str, agent_id: str) -> Agent:
        """Set `archived_at` (not a new version: the configuration is unchanged)."""

        def change(current: Agent, record: Record) -> Change[Agent] | None:
            if current.archived_at is not None:
                return None
            now = now_ts()
            return Change(value=msgspec.structs.replace(current, archived_at=now), archived_at=now)

        return await self.records.modify(workspace_id, agent_id, change)

    async def resolve_for_session(self, workspace_id: str, ref: msgspec.Raw) -> SessionAgent:
        """The snapshot for a new session, from the three forms of `agent`."""
        parsed = _decode_ref(ref)
        if isinstance(parsed, str):
            agent_id, version = parsed, None
        else:
            agent_id, version = parsed.id, parsed.version
        agent = await self.retrieve(workspace_id, agent_id, version)
        if agent.archived_at is not None:
            raise InvalidInputError(f"agent {agent_id!r} is archived", code="agent_archived")
        snapshot = session_agent(agent)
        if isinstance(parsed, AgentWithOverrides):
            snapshot = _override(snapshot, parsed)
        return snapshot


def _override(snapshot: SessionAgent, params: AgentWithOverrides) -> SessionAgent:
    changes: dict[str, object] = {}
    if params.model is not msgspec.UNSET:
        changes["model"] = resolve_model(params.model)
    if params.system is not msgspec.UNSET:
        changes["system"] = params.system or None
    servers = snapshot.mcp_servers
    if params.mcp_servers is not msgspec.UNSET:
        servers = params.mcp_servers
        changes["mcp_servers"] = servers
    if params.tools is not msgspec.UNSET:
        changes["tools"] = resolve_tools(params.tools, servers)
    if params.skills is not msgspec.UNSET:
        changes["skills"] = resolve_skills(params.skills)
    return msgspec.structs.replace(snapshot, **changes)
