"""An instant fake Anthropic Messages API for the engine benchmark (its own process).

A request whose last turn carries a tool result gets the text `done`; any other gets one
`bash` tool call (`true`). The whole SSE body is prebuilt and written at once.
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _body(tool: bool) -> bytes:
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }
    out = [_sse("message_start", {"type": "message_start", "message": message})]
    if tool:
        block = {"type": "tool_use", "id": "toolu_bench", "name": "bash", "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps({"command": "true"})}
    else:
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": "done"}
    out.append(
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
    )
    out.append(
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    )
    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        )
    )
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return "".join(out).encode()


TOOL, TEXT = _body(True), _body(False)


async def messages(request: Request) -> Response:
    body = await request.json()
    last = body["messages"][-1]["content"]
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    return Response(TEXT if answered else TOOL, media_type="text/event-stream")


async def health(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[Route("/v1/messages", messages, methods=["POST"]), Route("/health", health)]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
