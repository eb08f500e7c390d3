"""Run any ASGI app (a fake provider) under real uvicorn on 127.0.0.1, port 0, in a thread."""

from __future__ import annotations

import threading

import anyio
import uvicorn
from starlette.applications import Starlette

from sessiond.api.serve import bind


class ThreadedServer:
    """A fake on loopback; `base_url` is known as soon as it is constructed."""

    def __init__(self, app: Starlette) -> None:
        self.sock = bind("127.0.0.1", 0)
        host, port = self.sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: anyio.run(self.server.serve, [self.sock]), daemon=True
        )

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        ready = threading.Event()
        for _ in range(500):
            if self.server.started:
                break
            ready.wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()
