"""`sessiond worker`: the engine alone, no HTTP layer, on a database shared with others.

A worker drives sessions under leases (runtime/engine/supervisor.py) until SIGTERM or SIGINT.
Then it takes no new session, gives the drives in progress `STOP_DEADLINE_S` to reach a
rest, and cancels what is left: a cancelled drive writes nothing more (the log still says
running), gives its lease back at once, and another worker resumes the session from its
log. Nothing acknowledged is lost: an event is acknowledged only once committed.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import anyio

from sessiond.runtime.engine.loop import Models, ModelSource
from sessiond.runtime.node import Node, live_models
from sessiond.runtime.settings import Settings
from sessiond.store.errors import InvalidInputError
from sessiond.store.protocol import Store

log = logging.getLogger("sessiond.worker")

STOP_DEADLINE_S = 20.0


async def run_worker(
    settings: Settings, *, model_source: Callable[[Store, Models], ModelSource] | None = None
) -> None:
    """Run the engine until told to stop (`model_source`: see `Node`, given the store)."""
    if not settings.distributed:
        raise InvalidInputError(
            "workers share a PostgreSQL database (SESSIOND_DATABASE_URL=postgresql://…); "
            "on SQLite, `sessiond serve` runs the engine itself",
            code="worker_needs_postgres",
        )
    node = await Node.open(settings, model_source=model_source or live_models)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(node.supervisor.run)
            print(f"sessiond: worker driving up to {settings.drives} sessions", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for received in signals:
                    log.info("%s: finishing the drives in progress", signal.Signals(received).name)
                    break
            await node.supervisor.stop(STOP_DEADLINE_S)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await node.close()
