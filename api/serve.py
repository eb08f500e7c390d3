"""Run the server: one task group holds uvicorn on a pre-bound socket (and, later, workers).

Our `Server` subclass sets the app's `draining` event in `handle_exit`, instead of
relying on sse-starlette's monkeypatch, so live SSE streams end on their own and
uvicorn's shutdown does not wait on them; clients resume with `Last-Event-ID`.
"""

from __future__ import annotations

import gc
import logging
import socket
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette

from sessiond.api.app import create_app
from sessiond.api.config import Config

log = logging.getLogger("sessiond")


class Server(uvicorn.Server):
    """uvicorn's server, telling the app when it starts to drain."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        draining = getattr(self._app.state, "draining", None)
        if draining is not None:
            draining.set()
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so port 0 resolves before we announce it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this on Linux. Without it a response written in two
    # pieces waits for the client's delayed ACK: every POST took 44 ms (bench/README.md).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_server(app: Starlette, sock: socket.socket) -> Server:
    """A uvicorn server for `app` on an already-bound socket."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=10,
        access_log=False,
        # Nothing here reads the client's address, so uvicorn's X-Forwarded-* middleware
        # would only add a hop to every request and every SSE send.
        proxy_headers=False,
    )
    return Server(config, app)


def forbid_inspection() -> None:
    """Make this process non-dumpable (Linux): a tool command running as the same user can
    then read neither `/proc/<server>/environ` (the API keys the server was started with)
    nor its memory, nor attach a debugger. It does not help against root, which is one
    more reason to run sessiond as a user of its own."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_dumpable = 4
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: each SSE client holds a socket,
    and a soft limit of 1,024 (a common default) would refuse the thousandth."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def serve(config: Config, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    raise_fd_limit()
    forbid_inspection()
    sock = bind(host, port)
    app = create_app(config)
    server = build_server(app, sock)
    # Everything imported so far (the SDKs, pydantic models: ~200k objects) lives as long
    # as the process: out of the cyclic GC's reach, a full collection walks only what the
    # server makes, so its pauses (the p99 of appends and SSE) stay short.
    gc.freeze()
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"sessiond: database {config.database_url}", flush=True)
    print(f"sessiond: listening on http://{bound_host}:{bound_port}", flush=True)
    if not config.admin_api_key:
        print(
            "sessiond: SESSIOND_API_KEY is not set; create a key with `sessiond keys create`",
            flush=True,
        )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
