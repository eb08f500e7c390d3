"""Agent configuration: request params (as clients send them) and resolved shapes (as returned).

Requests forbid unknown fields so a client's typo fails loudly; responses are always the
full documented shapes, with defaults resolved: the model as an object with its effort,
every toolset tool listed with `enabled` and `permission_policy`, skill versions as
strings, an execution identity. Resolution is pure: `resolve_tools(params) -> tools`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from sessiond.store.errors import InvalidInputError

TOOLSET_TOOLS = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
"""Effort when none is given: the contract resolves it per model; we use one default."""
MAX_TOOLS = 256
MAX_MCP_SERVERS = 20

ToolName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
Effort = Literal["low", "medium", "high", "xhigh", "max"]
DEFAULT_EFFORT: Effort = "high"


class _Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of request bodies: unknown fields are an error."""


class _Tagged(_Params, tag_field="type"):
    """Base of tagged request unions."""


class _Out(msgspec.Struct, kw_only=True):
    """Base of response shapes."""


# -- permission policies ---------------------------------------------------------------


class AlwaysAllow(_Tagged, tag="always_allow"):
    """Run without asking."""


class AlwaysAsk(_Tagged, tag="always_ask"):
    """Wait for `user.tool_confirmation`."""


class Auto(_Tagged, tag="auto"):
    """The server judges each call."""


Policy = AlwaysAllow | AlwaysAsk | Auto


# -- model -----------------------------------------------------------------------------


class EffortObject(_Params):
    """`{"type": "high"}`."""

    type: Effort


class ModelParams(_Params):
    """The object form of `model`."""

    id: Annotated[str, msgspec.Meta(min_length=1)]
    effort: Effort | EffortObject | None = None
    speed: Literal["standard", "fast"] | None = None
    inference_geo: str | None = None


class ModelConfig(_Out):
    """The resolved model: always an object, effort in object form."""

    id: str
    effort: EffortObject
    speed: Literal["standard", "fast"] = "standard"
    inference_geo: str | None = None


def resolve_model(model: str | ModelParams) -> ModelConfig:
    """Resolve the string or object form."""
    if isinstance(model, str):
        if not model:
            raise InvalidInputError("model: must not be empty")
        return ModelConfig(id=model, effort=EffortObject(type=DEFAULT_EFFORT))
    effort = model.effort
    if effort is None:
        effort = EffortObject(type=DEFAULT_EFFORT)
    elif isinstance(effort, str):
        effort = EffortObject(type=effort)
    return ModelConfig(
        id=model.id,
        effort=effort,
        speed=model.speed or "standard",
        inference_geo=model.inference_geo,
    )


# -- tools -----------------------------------------------------------------------------


class ToolsetDefaultParams(_Params):
    """`default_config` of a toolset."""

    enabled: bool | None = None
    permission_policy: Policy | None = None


class AgentToolConfigParams(_Params):
    """One tool's config inside `agent_toolset_20260401`."""

    name: Literal["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"]
    type: str | None = None
    enabled: bool | None = None
    permission_policy: Policy | None = None
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None
    max_content_tokens: int | None = None
    url_sources: Any = None
    user_location: Any = None


class AgentToolsetParams(_Tagged, tag="agent_toolset_20260401"):
    """The built-in agent toolset."""

    default_config: ToolsetDefaultParams | None = None
    configs: list[AgentToolConfigParams] | None = None


class MCPToolConfigParams(_Params):
    """One MCP tool's config."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    enabled: bool | None = None
    permission_policy: Policy | None = None


class MCPToolsetParams(_Tagged, tag="mcp_toolset"):
    """Tools of one MCP server."""

    mcp_server_name: str
    default_config: ToolsetDefaultParams | None = None
    configs: list[MCPToolConfigParams] | None = None


class InputSchema(_Params):
    """A custom tool's JSON schema (an object schema)."""

    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class CustomToolParams(_Tagged, tag="custom"):
    """A tool the API client executes."""

    name: ToolName
    description: str
    input_schema: InputSchema


ToolParams = AgentToolsetParams | MCPToolsetParams | CustomToolParams


class DefaultConfig(_Out):
    """Resolved `default_config`."""

    enabled: bool
    permission_policy: Policy


class AgentToolConfig(_Out, omit_defaults=True):
    """A resolved toolset tool; web tools carry their extras (null when unset)."""

    name: str
    type: str
    enabled: bool
    permission_policy: Policy
    allowed_domains: list[str] | None | msgspec.UnsetType = msgspec.UNSET
    blocked_domains: list[str] | None | msgspec.UnsetType = msgspec.UNSET
    max_content_tokens: int | None | msgspec.UnsetType = msgspec.UNSET
    url_sources: Any = msgspec.UNSET
    user_location: Any = msgspec.UNSET


class AgentToolset(_Out, tag="agent_toolset_20260401", tag_field="type"):
    """Resolved agent toolset: all eight tools listed."""

    default_config: DefaultConfig
    configs: list[AgentToolConfig]


class MCPToolConfig(_Out):
    """Resolved MCP tool config."""

    name: str
    enabled: bool
    permission_policy: Policy


class MCPToolset(_Out, tag="mcp_toolset", tag_field="type"):
    """Resolved MCP toolset."""

    mcp_server_name: str
    default_config: DefaultConfig
    configs: list[MCPToolConfig]


class CustomTool(_Out, tag="custom", tag_field="type"):
    """Resolved custom tool."""

    name: str
    description: str
    input_schema: InputSchema


Tool = AgentToolset | MCPToolset | CustomTool


def _web_extras(config: AgentToolConfigParams | None, name: str) -> dict[str, Any]:
    if name == "web_fetch":
        allowed = config.allowed_domains if config else None
        blocked = config.blocked_domains if config else None
        if allowed is not None and blocked is not None:
            raise InvalidInputError(
                "web_fetch: allowed_domains and blocked_domains exclude each other"
            )
        for field, value in (("allowed_domains", allowed), ("blocked_domains", blocked)):
            if value is not None and not 1 <= len(value) <= 64:
                raise InvalidInputError(f"web_fetch.{field}: 1 to 64 domains")
        return {
            "allowed_domains": allowed,
            "blocked_domains": blocked,
            "max_content_tokens": config.max_content_tokens if config else None,
            "url_sources": config.url_sources if config else None,
        }
    if name == "web_search":
        return {
            "allowed_domains": config.allowed_domains if config else None,
            "blocked_domains": config.blocked_domains if config else None,
            "user_location": config.user_location if config else None,
        }
    return {}


def _resolve_toolset(params: AgentToolsetParams) -> AgentToolset:
    defaults = params.default_config or ToolsetDefaultParams()
    default = DefaultConfig(
        enabled=True if defaults.enabled is None else defaults.enabled,
        permission_policy=defaults.permission_policy or AlwaysAllow(),
    )
    given: dict[str, AgentToolConfigParams] = {}
    for config in params.configs or []:
        if config.type is not None and config.type != config.name:
            raise InvalidInputError(f"tools: config type {config.type!r} must equal its name")
        if config.name in given:
            raise InvalidInputError(f"tools: {config.name!r} is configured twice")
        given[config.name] = config
    configs = []
    for name in TOOLSET_TOOLS:
        found = given.get(name)
        configs.append(
            AgentToolConfig(
                name=name,
                type=name,
                enabled=default.enabled
                if found is None or found.enabled is None
                else found.enabled,
                permission_policy=(
                    found.permission_policy
                    if found and found.permission_policy
                    else default.permission_policy
                ),
                **_web_extras(found, name),
            )
        )
    return AgentToolset(default_config=default, configs=configs)


def _resolve_mcp(params: MCPToolsetParams) -> MCPToolset:
    defaults = params.default_config or ToolsetDefaultParams()
    default = DefaultConfig(
        enabled=True if defaults.enabled is None else defaults.enabled,
        permission_policy=defaults.permission_policy or AlwaysAsk(),
    )
    configs = [
        MCPToolConfig(
            name=c.name,
            enabled=default.enabled if c.enabled is None else c.enabled,
            permission_policy=c.permission_policy or default.permission_policy,
        )
        for c in params.configs or []
    ]
    return MCPToolset(
        mcp_server_name=params.mcp_server_name, default_config=default, configs=configs
    )


class MCPServer(_Params, tag="url", tag_field="type"):
    """`{"type": "url", "name", "url"}` (same shape in and out)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    url: Annotated[str, msgspec.Meta(min_length=1)]


def resolve_tools(tools: list[ToolParams], servers: list[MCPServer]) -> list[Tool]:
    """Resolve tools and check them against the MCP servers they reference."""
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise InvalidInputError("mcp_servers: names must be unique")
    if len(servers) > MAX_MCP_SERVERS:
        raise InvalidInputError(f"mcp_servers: at most {MAX_MCP_SERVERS}")
    resolved: list[Tool] = []
    custom_names: set[str] = set()
    referenced: set[str] = set()
    toolsets = 0
    for tool in tools:
        if isinstance(tool, AgentToolsetParams):
            toolsets += 1
            resolved.append(_resolve_toolset(tool))
        elif isinstance(tool, MCPToolsetParams):
            if tool.mcp_server_name not in names:
                raise InvalidInputError(
                    f"tools: mcp_toolset names {tool.mcp_server_name!r}, "
                    "which is not in mcp_servers"
                )
            referenced.add(tool.mcp_server_name)
            resolved.append(_resolve_mcp(tool))
        else:
            if tool.name in custom_names or tool.name in TOOLSET_TOOLS and toolsets:
                raise InvalidInputError(f"tools: the tool name {tool.name!r} is used twice")
            custom_names.add(tool.name)
            resolved.append(
                CustomTool(
                    name=tool.name, description=tool.description, input_schema=tool.input_schema
                )
            )
    if toolsets > 1:
        raise InvalidInputError("tools: at most one agent_toolset_20260401")
    unreferenced = set(names) - referenced
    if unreferenced:
        raise InvalidInputError(
            f"mcp_servers: {sorted(unreferenced)[0]!r} is not referenced by any mcp_toolset"
        )
    if len(tools) > MAX_TOOLS:
        raise InvalidInputError(f"tools: at most {MAX_TOOLS}")
    return resolved


# -- skills, identity, multiagent ---------------------------------------------------------


class AnthropicSkillParams(_Tagged, tag="anthropic"):
    """A built-in skill (e.g. `xlsx`)."""

    skill_id: Annotated[str, msgspec.Meta(min_length=1)]
    version: str | None = None


class CustomSkillParams(_Tagged, tag="custom"):
    """An uploaded skill (`skill_…`)."""

    skill_id: Annotated[str, msgspec.Meta(min_length=1)]
    version: str | None = None


class Skill(_Out):
    """Resolved skill reference; `version` is always a string (`latest` when unpinned)."""

    type: Literal["anthropic", "custom"]
    skill_id: str
    version: str


def resolve_skills(skills: list[AnthropicSkillParams | CustomSkillParams]) -> list[Skill]:
    """Resolve versions."""
    return [
        Skill(
            type="anthropic" if isinstance(s, AnthropicSkillParams) else "custom",
            skill_id=s.skill_id,
            version=s.version or "latest",
        )
        for s in skills
    ]


class ServiceAccount(_Tagged, tag="service_account"):
    """Runs carry no customer-named principal (the default)."""


class AwsRole(_Tagged, tag="aws_role"):
    """Runs assume this role."""

    role_arn: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


ExecutionIdentity = ServiceAccount | AwsRole


class Multiagent(msgspec.Struct, kw_only=True, tag_field="type"):
    """Base of multiagent configs; stored as given (orchestration is a later milestone)."""


class Coordinator(Multiagent, tag="coordinator"):
    """The legacy roster form."""

    agents: list[Any]


class Multiagent20261001(Multiagent, tag="multiagent_20261001"):
    """The current form."""

    advisor: Any = None
    subagents: Any = None
    workflows: Any = None


MultiagentConfig = Coordinator | Multiagent20261001


def check_metadata(metadata: dict[str, str]) -> None:
    """≤16 keys, keys 1–64 characters, values ≤512."""
    if len(metadata) > 16:
        raise InvalidInputError("metadata: at most 16 keys", code="invalid_metadata")
    for key, value in metadata.items():
        if not 1 <= len(key) <= 64 or len(value) > 512:
            raise InvalidInputError(
                "metadata: keys must be 1-64 characters and values at most 512",
                code="invalid_metadata",
            )


def patch_metadata(
    current: dict[str, str], patch: dict[str, str | None], *, empty_deletes: bool = False
) -> dict[str, str]:
    """Apply a metadata patch: a string upserts, null (or "" if `empty_deletes`) deletes."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None or (empty_deletes and value == ""):
            merged.pop(key, None)
        else:
            merged[key] = value
    check_metadata(merged)
    return merged
