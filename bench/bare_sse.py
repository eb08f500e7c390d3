"""The HTTP layer's ceiling: bare Starlette + sse-starlette streaming payloads from memory.

`POST /publish/{stream}` hands the body to every subscriber of the stream;
`GET /stream/{stream}` is an EventSourceResponse over the subscriber's queue. No store,
no auth, no JSON work: what is left is uvicorn, Starlette and sse-starlette.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections import defaultdict
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

subscribers: dict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)
ids = itertools.count(1)


async def publish(request: Request) -> Response:
    body = await request.body()
    for queue in subscribers[request.path_params["stream"]]:
        queue.put_nowait(body)
    return Response(b'{"ok":true}', media_type="application/json")


async def stream(request: Request) -> Response:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    name = request.path_params["stream"]
    subscribers[name].add(queue)

    async def frames() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                body = await queue.get()
                yield {"event": "user.message", "id": f"e{next(ids)}", "data": body.decode()}
        finally:
            subscribers[name].discard(queue)

    return EventSourceResponse(frames(), ping=15, sep="\r\n")


async def health(request: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/publish/{stream}", publish, methods=["POST"]),
        Route("/stream/{stream}", stream),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
