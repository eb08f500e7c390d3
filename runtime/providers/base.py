"""The provider-neutral model request and response, and the Provider protocol.

The engine folds a session's log into a `ModelRequest`; an adapter turns it into one
provider's wire format, streams the answer (reporting text deltas as they come), and
returns a `ModelResponse`. Provider errors are translated once, in the adapter, into
`sessiond.store.errors` classes with `retryable` set; retrying is not the adapter's job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec


class TextBlock(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    """Text."""

    text: str


class ToolUseBlock(msgspec.Struct, frozen=True, tag="tool_use", tag_field="type"):
    """The model calls a tool; `id` pairs it with its result."""

    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, frozen=True, tag="tool_result", tag_field="type"):
    """A tool's answer to the call with `tool_use_id`."""

    tool_use_id: str
    content: list[TextBlock]
    is_error: bool = False


Block = TextBlock | ToolUseBlock | ToolResultBlock


class Message(msgspec.Struct, frozen=True):
    """One turn of the conversation."""

    role: Literal["user", "assistant"]
    content: list[Block]


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool offered to the model."""

    name: str
    description: str
    input_schema: dict[str, Any]


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one model call needs."""

    model: str
    system: str | None
    messages: list[Message]
    tools: list[ToolSpec] = []
    max_tokens: int = 8192


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


StopReason = Literal["end_turn", "tool_use", "max_tokens", "refusal"]


class ModelResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The final answer of one call."""

    content: list[TextBlock | ToolUseBlock]
    stop_reason: StopReason
    usage: Usage
    model: str
    request_id: str | None = None


class TextDelta(msgspec.Struct, frozen=True):
    """A fragment of text block `index` (0-based among the response's text blocks)."""

    index: int
    text: str


DeltaCallback = Callable[[TextDelta], Awaitable[None]]


class Provider(Protocol):
    """One model backend."""

    name: str

    async def complete(
        self, request: ModelRequest, *, on_delta: DeltaCallback | None = None
    ) -> ModelResponse:
        """Stream one call to its end. Raises sessiond errors with `retryable` set."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
