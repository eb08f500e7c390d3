"""The Starlette application: services on `app.state`, one exception-handler table, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.bodies import json_response
from sessiond.api.config import Config
from sessiond.api.errors import EXCEPTION_HANDLERS
from sessiond.api.routes import agents, environments, evals, events, sessions, work, workspaces
from sessiond.api.services import Services
from sessiond.api.sse import StreamSlots
from sessiond.runtime.resources.workspaces import REVOKED_TOPIC


async def health(request: Request) -> Response:
    """Liveness without auth."""
    return json_response({"ok": True})


def create_app(config: Config) -> Starlette:
    """Build the app. Its lifespan opens the store and closes it after the last request."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Set when the server starts draining: live SSE streams end on their own so that
        # uvicorn can finish its shutdown (it waits for open connections). Made here
        # because an anyio Event belongs to the running loop.
        app.state.draining = anyio.Event()
        services = await Services.start(config)
        app.state.services = services
        # A key revoked through any process ends its streams in this one too.
        stop_hearing = services.store.subscribe(REVOKED_TOPIC, app.state.stream_slots.revoke)
        created = await services.workspaces.bootstrap_key()
        if created is not None:
            # Shown once, here, on the first start of a fresh install; stored only hashed.
            print(f"sessiond: created the first API key (shown once): {created.secret}", flush=True)
        try:
            # The supervisor's task group lives exactly as long as the app: every turn is
            # its child, and cancelling it at shutdown ends them (their closing events
            # are written shielded).
            async with anyio.create_task_group() as tg:
                if config.run_engine:
                    await tg.start(services.supervisor.run)
                    await tg.start(services.evals.run)
                yield
                tg.cancel_scope.cancel()
        finally:
            stop_hearing()
            app.state.draining.set()
            await services.stop()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            *workspaces.routes,
            *agents.routes,
            *work.routes,
            # New resource families (issue 15): one line each, replacing its marker.
            # <files routes>
            # <skills routes>
            # <vaults routes>
            *environments.routes,
            *sessions.routes,
            *events.routes,
            *evals.routes,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.stream_slots = StreamSlots(config.limits.max_streams_per_key)
    return app
