"""Which tools a pinned agent offers the model, and what its policy says about each call.

Reads the session's agent snapshot as resolved at session creation (every toolset config
listed with its `enabled` flag and `permission_policy`), so the answer never changes
under a running session when the agent is updated.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sessiond.runtime.wire import events as ev

Permission = Literal["allow", "ask", "deny"]

TOOLSET_SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "bash": (
        "Run a shell command in the session's working directory; returns stdout and stderr.",
        {
            "type": "object",
            "properties": {
                "command": {"type": "string"},
                "restart": {"type": "boolean"},
                "timeout_ms": {"type": "integer"},
            },
        },
    ),
    "read": (
        "Read a text file, with line numbers; view_range is [start, end], 1-based, end<=0 = EOF.",
        {
            "type": "object",
            "properties": {
                "file_path": {"type": "string"},
                "view_range": {"type": "array", "items": {"type": "integer"}},
            },
            "required": ["file_path"],
        },
    ),
    "write": (
        "Create or overwrite a file with the given content.",
        {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["file_path", "content"],
        },
    ),
    "edit": (
        "Replace old_string with new_string in a file (old_string must be unique unless "
        "replace_all).",
        {
            "type": "object",
            "properties": {
                "file_path": {"type": "string"},
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            "required": ["file_path", "old_string", "new_string"],
        },
    ),
    "glob": (
        "List files matching a glob pattern.",
        {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    ),
    "grep": (
        "Search file contents with a regular expression; returns path:line:text.",
        {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    ),
}


class OfferedTool(msgspec.Struct, frozen=True):
    """A tool as the model sees it, plus how its calls are handled."""

    name: str
    description: str
    input_schema: dict[str, Any]
    kind: Literal["toolset", "custom"]
    policy: str = "always_allow"


class AgentTools(msgspec.Struct, frozen=True):
    """The tools of one agent snapshot, by name."""

    model: str
    system: str | None
    tools: dict[str, OfferedTool]

    def classify(
        self, name: str, tool_input: dict[str, Any]
    ) -> ev.AgentToolUse | ev.AgentCustomToolUse:
        """The event for a model's call of `name` (ids are filled in by the caller)."""
        offered = self.tools.get(name)
        if offered is not None and offered.kind == "custom":
            return ev.AgentCustomToolUse(name=name, input=tool_input)
        if offered is None:
            # Not offered (or disabled): refused before any policy applied.
            return ev.AgentToolUse(name=name, input=tool_input, evaluated_permission="deny")
        if offered.policy == "always_ask":
            return ev.AgentToolUse(
                name=name,
                input=tool_input,
                evaluated_permission="ask",
                evaluation=ev.EvaluationAlwaysAsk(),
            )
        if offered.policy == "auto":
            return ev.AgentToolUse(
                name=name,
                input=tool_input,
                evaluated_permission="ask",
                evaluation=ev.EvaluationAuto(
                    evaluated_permission=ev.AutoAsk(reason_code="indeterminate")
                ),
            )
        return ev.AgentToolUse(
            name=name,
            input=tool_input,
            evaluated_permission="allow",
            evaluation=ev.EvaluationAlwaysAllow(),
        )


def _policy(config: dict[str, Any], default: str) -> str:
    policy = config.get("permission_policy")
    if isinstance(policy, dict) and isinstance(policy.get("type"), str):
        return str(policy["type"])
    return default


def agent_tools(snapshot: bytes) -> AgentTools:
    """Read the offered tools out of a session's agent snapshot JSON."""
    agent = msgspec.json.decode(snapshot)
    model = agent.get("model")
    model_id = model.get("id") if isinstance(model, dict) else str(model)
    offered: dict[str, OfferedTool] = {}
    for tool in agent.get("tools") or []:
        kind = tool.get("type")
        if kind == "custom":
            offered[tool["name"]] = OfferedTool(
                name=tool["name"],
                description=tool.get("description") or "",
                input_schema=tool.get("input_schema") or {"type": "object"},
                kind="custom",
            )
        elif isinstance(kind, str) and kind.startswith("agent_toolset"):
            defaults = tool.get("default_config") or {}
            default_enabled = defaults.get("enabled", True)
            default_policy = _policy(defaults, "always_allow")
            configs = {c.get("name"): c for c in tool.get("configs") or []}
            for name, (description, schema) in TOOLSET_SCHEMAS.items():
                config = configs.get(name, {})
                if not config.get("enabled", default_enabled):
                    continue
                offered[name] = OfferedTool(
                    name=name,
                    description=description,
                    input_schema=schema,
                    kind="toolset",
                    policy=_policy(config, default_policy),
                )
    return AgentTools(model=str(model_id), system=agent.get("system"), tools=offered)
