"""The Anthropic Messages API through the official `anthropic` SDK, always streaming.

The SDK's own retries are off (`max_retries=0`): retries have one owner, the resilience
layer, which logs every failed attempt to the session.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic
import anthropic.types as at
import msgspec

from sessiond.runtime.providers import base as pb
from sessiond.runtime.providers.errors import connection_error, from_status
from sessiond.store.errors import AppError, UnavailableError

DEFAULT_TIMEOUT_S = 300.0
_STOP_REASONS: dict[str, pb.StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
    "pause_turn": "end_turn",
}


def _block(block: pb.Block) -> dict[str, Any]:
    if isinstance(block, pb.TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, pb.ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": [{"type": "text", "text": t.text} for t in block.content],
        "is_error": block.is_error,
    }


def to_params(request: pb.ModelRequest) -> dict[str, Any]:
    """The Messages API body for a request."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [
            {"role": m.role, "content": [_block(b) for b in m.content]} for m in request.messages
        ],
    }
    if request.system:
        params["system"] = request.system
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in request.tools
        ]
    return params


def translate(exc: Exception) -> AppError:
    """The SDK's exception as one of ours."""
    if isinstance(exc, anthropic.APIStatusError):
        body: dict[str, Any] = exc.body if isinstance(exc.body, dict) else {}
        found = body.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        if exc.status_code == 200 and error.get("type") == "overloaded_error":
            return UnavailableError(f"anthropic: {exc.message}", code="model_overloaded")
        return from_status("anthropic", exc.status_code, exc.message, exc.response.headers)
    return connection_error("anthropic", str(exc) or type(exc).__name__)


class AnthropicProvider:
    """Messages API adapter."""

    def __init__(
        self,
        name: str = "anthropic",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.name = name
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or os.environ.get("ANTHROPIC_API_KEY") or "not-configured",
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            max_retries=0,
            timeout=timeout_s,
        )

    async def complete(
        self, request: pb.ModelRequest, *, on_delta: pb.DeltaCallback | None = None
    ) -> pb.ModelResponse:
        """Stream one Messages call and assemble its content."""
        blocks: dict[int, dict[str, Any]] = {}
        text_index: dict[int, int] = {}
        usage: dict[str, int] = {}
        stop: str | None = None
        request_id: str | None = None
        try:
            # The SDK's own transport, errors and stream decoding, but a body encoded here:
            # `messages.create` deep-copies and re-encodes the whole history on every call
            # (~5 ms of CPU for a 30-turn session, on the server's loop).
            # Typed loosely: the SDK's RequestOptions gained the tracing keys in later
            # releases, and sessiond runs on a range of them.
            options: Any = {
                "headers": {"Content-Type": "application/json"},
                # The SDK's tracing span, as messages.create names it.
                "span_name": "anthropic.messages.create",
                "span_route": "/v1/messages",
            }
            stream = await self._client.post(
                "/v1/messages",
                cast_to=anthropic.types.Message,
                content=msgspec.json.encode({**to_params(request), "stream": True}),
                options=options,
                stream=True,
                stream_cls=anthropic.AsyncStream[anthropic.types.RawMessageStreamEvent],
            )
            request_id = getattr(stream, "request_id", None) or stream.response.headers.get(
                "request-id"
            )
            async with stream:
                async for event in stream:
                    if isinstance(event, at.RawMessageStartEvent):
                        u = event.message.usage
                        usage["input_tokens"] = u.input_tokens or 0
                        usage["cache_read_input_tokens"] = u.cache_read_input_tokens or 0
                        usage["cache_creation_input_tokens"] = u.cache_creation_input_tokens or 0
                        usage["output_tokens"] = u.output_tokens or 0
                    elif isinstance(event, at.RawContentBlockStartEvent):
                        block = event.content_block
                        if isinstance(block, at.TextBlock):
                            text_index[event.index] = len(text_index)
                            blocks[event.index] = {"type": "text", "text": block.text or ""}
                        elif isinstance(block, at.ToolUseBlock):
                            blocks[event.index] = {
                                "type": "tool_use",
                                "id": block.id,
                                "name": block.name,
                                "json": "",
                            }
                    elif isinstance(event, at.RawContentBlockDeltaEvent):
                        delta = event.delta
                        target = blocks.get(event.index)
                        if target is None:
                            continue
                        if isinstance(delta, at.TextDelta):
                            target["text"] += delta.text
                            if on_delta is not None:
                                await on_delta(pb.TextDelta(text_index[event.index], delta.text))
                        elif isinstance(delta, at.InputJSONDelta):
                            target["json"] += delta.partial_json
                    elif isinstance(event, at.RawMessageDeltaEvent):
                        stop = event.delta.stop_reason or stop
                        if event.usage is not None and event.usage.output_tokens is not None:
                            usage["output_tokens"] = event.usage.output_tokens
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise translate(exc) from exc
        return pb.ModelResponse(
            content=[_finish(blocks[i]) for i in sorted(blocks)],
            stop_reason=_STOP_REASONS.get(stop or "end_turn", "end_turn"),
            usage=pb.Usage(**usage),
            model=request.model,
            request_id=request_id,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


def _finish(block: dict[str, Any]) -> pb.TextBlock | pb.ToolUseBlock:
    if block["type"] == "text":
        return pb.TextBlock(text=block["text"])
    try:
        tool_input = json.loads(block["json"]) if block["json"] else {}
    except json.JSONDecodeError:
        tool_input = {"_unparsed_input": block["json"]}
    if not isinstance(tool_input, dict):
        tool_input = {"value": tool_input}
    return pb.ToolUseBlock(id=block["id"], name=block["name"], input=tool_input)
