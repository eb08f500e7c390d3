"""The session event stream: replay from a position, then a live tail, as SSE frames.

Every frame has an `event:` line (the SDK drops frames without one) and persisted events
carry `id: <event id>`, so `Last-Event-ID` resumes exactly after the last frame a client
saw. The tail re-reads the log after each nudge from the store's watch: the log is the
buffer, the nudge holds one number, and a slow client costs no memory here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import msgspec

from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import NotFoundError
from sessiond.store.protocol import EventQuery, Store, StoredEvent, Watch

_BATCH = 256
_CLOSING_TYPES = frozenset({"session.deleted", "session.status_terminated"})


def frame(stored: StoredEvent, wire: bytes) -> bytes:
    """One SSE frame for a persisted event."""
    return b"event: %b\r\nid: %b\r\ndata: %b\r\n\r\n" % (
        stored.type.encode(),
        stored.id.encode(),
        wire,
    )


def deleted_frame() -> bytes:
    """The last frame of a stream whose session was deleted while it was open."""
    body = msgspec.json.encode(
        {"id": new_id("sevt"), "type": "session.deleted", "processed_at": now_ts()}
    )
    return b"event: session.deleted\r\ndata: %b\r\n\r\n" % body


def error_frame(body: bytes) -> bytes:
    """An `event: error` frame with an Anthropic error body (the SDK raises on it)."""
    return b"event: error\r\ndata: %b\r\n\r\n" % body


async def _wait_or_drain(watch: Watch, after_seq: int, draining: anyio.Event) -> int | None:
    """The stream's new last seq, or None once the server starts draining."""
    result: int | None = None

    async def wait_append() -> None:
        nonlocal result
        result = await watch.wait(after_seq)
        tg.cancel_scope.cancel()

    async def wait_drain() -> None:
        await draining.wait()
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_append)
        tg.start_soon(wait_drain)
    return result


async def tail(
    store: Store,
    session_id: str,
    *,
    after_seq: int | None,
    draining: anyio.Event,
    to_wire: Callable[[StoredEvent], bytes],
) -> AsyncIterator[bytes]:
    """Frames of the events after `after_seq` (None: live only), then live ones, forever.

    Ends after `session.deleted` / `session.status_terminated`, or when the server drains.
    """
    try:
        async with store.watch(session_id) as watch:
            # Taken after the watch is registered: an append racing this read is either
            # in `cursor` or wakes the watch, never lost in between.
            cursor = await store.last_seq(session_id) if after_seq is None else after_seq
            while not draining.is_set():
                batch = await store.read(session_id, EventQuery(after_seq=cursor, limit=_BATCH))
                for stored in batch:
                    yield frame(stored, to_wire(stored))
                    cursor = stored.seq
                    if stored.type in _CLOSING_TYPES:
                        return
                if len(batch) == _BATCH:
                    continue
                if await _wait_or_drain(watch, cursor, draining) is None:
                    return
    except NotFoundError:
        yield deleted_frame()
