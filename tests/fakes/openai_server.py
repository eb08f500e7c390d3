"""A fake OpenAI chat-completions API: `POST /v1/chat/completions`, streamed chunks.

Chunks follow the real shapes: `chat.completion.chunk` deltas with `content`, tool calls
by `index` (id and name first, then argument fragments), a final chunk with
`finish_reason`, a usage chunk with empty `choices` (stream_options.include_usage), then
`data: [DONE]`. Errors use OpenAI's error body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fakes.scripts import Fail, Reply, Script, split
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def _chunk(n: int, model: str, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
    data = {
        "id": f"chatcmpl-fake{n}",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        data["usage"] = usage
    return f"data: {json.dumps(data)}\n\n".encode()


async def _stream(reply: Reply, model: str, n: int) -> AsyncIterator[bytes]:
    if reply.text is not None:
        for i, piece in enumerate(split(reply.text, reply.chunks)):
            if reply.chunk_delay_s:
                await anyio.sleep(reply.chunk_delay_s)
            delta: dict[str, Any] = {"content": piece}
            if i == 0:
                delta["role"] = "assistant"
            yield _chunk(n, model, [{"index": 0, "delta": delta, "finish_reason": None}])
    for index, (name, tool_input) in enumerate(reply.tool_calls):
        first = {
            "tool_calls": [
                {
                    "index": index,
                    "id": f"call_fake{n}_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
        yield _chunk(n, model, [{"index": 0, "delta": first, "finish_reason": None}])
        for piece in split(json.dumps(tool_input), 3):
            more = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            yield _chunk(n, model, [{"index": 0, "delta": more, "finish_reason": None}])
    finish = "tool_calls" if reply.tool_calls else "stop"
    yield _chunk(n, model, [{"index": 0, "delta": {}, "finish_reason": finish}])
    usage = {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }
    yield _chunk(n, model, [], usage)
    yield b"data: [DONE]\n\n"


def create_app(script: Script) -> Starlette:
    """The fake, answering from `script`."""

    async def completions(request: Request) -> Response:
        body = await request.json()
        step = script.next(body, dict(request.headers))
        n = len(script.requests)
        headers = {"x-request-id": f"req_fake{n}"}
        if isinstance(step, Fail):
            if step.retry_after is not None:
                headers["retry-after"] = step.retry_after
            error = {"message": step.message, "type": "server_error", "code": None, "param": None}
            return JSONResponse({"error": error}, step.status, headers=headers)
        return StreamingResponse(
            _stream(step, body.get("model", ""), n),
            media_type="text/event-stream",
            headers=headers,
        )

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
