"""OpenAI chat completions through the official `openai` SDK, streaming, with tool calls.

Also serves any OpenAI-compatible server (Ollama, vLLM, LiteLLM, llama.cpp) by `base_url`.
Tool results become `role: "tool"` messages placed straight after the assistant message
that called them, as the API requires; user text of the same turn follows them.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import msgspec
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from sessiond.runtime.providers import base as pb
from sessiond.runtime.providers.errors import connection_error, from_status
from sessiond.store.errors import AppError

DEFAULT_TIMEOUT_S = 300.0
_STOP_REASONS: dict[str, pb.StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def to_messages(request: pb.ModelRequest) -> list[dict[str, Any]]:
    """Chat messages for a request."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for message in request.messages:
        texts = [b.text for b in message.content if isinstance(b, pb.TextBlock)]
        if message.role == "assistant":
            calls = [
                {
                    "id": b.id,
                    "type": "function",
                    "function": {"name": b.name, "arguments": json.dumps(b.input)},
                }
                for b in message.content
                if isinstance(b, pb.ToolUseBlock)
            ]
            entry: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        for block in message.content:
            if isinstance(block, pb.ToolResultBlock):
                text = "\n".join(t.text for t in block.content)
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.tool_use_id,
                        "content": f"[error] {text}" if block.is_error else text,
                    }
                )
        if texts:
            out.append({"role": "user", "content": "\n".join(texts)})
    return out


def translate(exc: Exception) -> AppError:
    """The SDK's exception as one of ours."""
    if isinstance(exc, openai.APIStatusError):
        return from_status("openai", exc.status_code, exc.message, exc.response.headers)
    return connection_error("openai", str(exc) or type(exc).__name__)


class OpenAIProvider:
    """Chat-completions adapter (OpenAI or a compatible server)."""

    def __init__(
        self,
        name: str = "openai",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.name = name
        self._client = openai.AsyncOpenAI(
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-configured",
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
            max_retries=0,
            timeout=timeout_s,
        )
        self._raw_body = "content" in inspect.signature(self._client.post).parameters

    async def complete(
        self, request: pb.ModelRequest, *, on_delta: pb.DeltaCallback | None = None
    ) -> pb.ModelResponse:
        """Stream one completion and assemble text and tool calls."""
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_messages(request),
            "max_completion_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in request.tools
            ]
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish: str | None = None
        usage = pb.Usage()
        request_id: str | None = None
        try:
            if self._raw_body:
                # The SDK's transport, errors and stream decoding, but a body encoded here:
                # `create` transforms and copies the whole history on every call.
                stream = await self._client.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    content=msgspec.json.encode(params),
                    options={"headers": {"Content-Type": "application/json"}},
                    stream=True,
                    stream_cls=openai.AsyncStream[ChatCompletionChunk],
                )
            else:  # an SDK older than `post(content=...)` (openai < 2.30)
                stream = await self._client.chat.completions.create(**params)
            request_id = stream.response.headers.get("x-request-id")
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        details = chunk.usage.prompt_tokens_details
                        cached = (details.cached_tokens or 0) if details else 0
                        usage = pb.Usage(
                            input_tokens=chunk.usage.prompt_tokens or 0,
                            output_tokens=chunk.usage.completion_tokens or 0,
                            cache_read_input_tokens=cached,
                        )
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content:
                            text.append(delta.content)
                            if on_delta is not None:
                                await on_delta(pb.TextDelta(0, delta.content))
                        for call in delta.tool_calls or []:
                            slot = calls.setdefault(call.index, {"id": "", "name": "", "args": ""})
                            if call.id:
                                slot["id"] = call.id
                            if call.function is not None:
                                slot["name"] += call.function.name or ""
                                slot["args"] += call.function.arguments or ""
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise translate(exc) from exc
        content: list[pb.TextBlock | pb.ToolUseBlock] = []
        if text:
            content.append(pb.TextBlock(text="".join(text)))
        for index in sorted(calls):
            slot = calls[index]
            try:
                arguments = json.loads(slot["args"]) if slot["args"] else {}
            except json.JSONDecodeError:
                arguments = {"_unparsed_input": slot["args"]}
            if not isinstance(arguments, dict):
                arguments = {"value": arguments}
            content.append(pb.ToolUseBlock(id=slot["id"], name=slot["name"], input=arguments))
        return pb.ModelResponse(
            content=content,
            stop_reason=_STOP_REASONS.get(finish or "stop", "end_turn"),
            usage=usage,
            model=request.model,
            request_id=request_id,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
