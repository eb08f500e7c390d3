"""A fake Anthropic Messages API: `POST /v1/messages` with `stream: true`, real SSE framing.

Event order and shapes follow the real API: message_start, then per block
content_block_start / *_delta / content_block_stop (text_delta for text, input_json_delta
for tool_use), message_delta with the stop reason and output usage, message_stop. Errors
use the real error body and statuses (429 with retry-after, 529 overloaded, 500).
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

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(reply: Reply, model: str, n: int) -> AsyncIterator[bytes]:
    yield _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": f"msg_fake{n}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
            },
        },
    )
    index = 0
    if reply.text is not None:
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        )
        for piece in split(reply.text, reply.chunks):
            if reply.chunk_delay_s:
                await anyio.sleep(reply.chunk_delay_s)
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    for number, (name, tool_input) in enumerate(reply.tool_calls):
        yield _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {
                    "type": "tool_use",
                    "id": f"toolu_fake{n}_{number}",
                    "name": name,
                    "input": {},
                },
            },
        )
        for piece in split(json.dumps(tool_input), 3):
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
                "stop_sequence": None,
            },
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def create_app(script: Script) -> Starlette:
    """The fake, answering from `script`."""

    async def messages(request: Request) -> Response:
        body = await request.json()
        step = script.next(body, dict(request.headers))
        n = len(script.requests)
        headers = {"request-id": f"req_fake{n}"}
        if isinstance(step, Fail):
            if step.retry_after is not None:
                headers["retry-after"] = step.retry_after
            error = {"type": _ERROR_TYPES.get(step.status, "api_error"), "message": step.message}
            return JSONResponse({"type": "error", "error": error}, step.status, headers=headers)
        return StreamingResponse(
            _stream(step, body.get("model", ""), n),
            media_type="text/event-stream",
            headers=headers,
        )

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
