"""The session event stream: replay from a position, then a live tail, as SSE frames.

Every frame has an `event:` line (the SDK drops frames without one) and persisted events
carry `id: <event id>`, so `Last-Event-ID` resumes exactly after the last frame a client
saw. Previews (`event_start` / `event_delta`) carry no `id:`, so a resume id always names
a persisted event. The tail re-reads the log after each nudge from the store's watch:
the log is the buffer, the nudge holds one number, and a slow client costs no memory here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from sessiond.runtime import events as ev
from sessiond.runtime.deltas import DeltaHub, Preview
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import NotFoundError
from sessiond.store.protocol import EventQuery, Store, StoredEvent, Watch

_BATCH = 256
_FIRST_BATCH = 16
"""The first read is small, so a resuming client gets its first event before the rest
of a long backlog has been read (measured in bench/resume.py)."""
_CLOSING_TYPES = frozenset({"session.deleted", "session.status_terminated"})
_PREVIEWED_TYPES = frozenset({"agent.message", "agent.thinking"})


def frame(stored: StoredEvent, wire: bytes) -> bytes:
    """One SSE frame for a persisted event."""
    return b"event: %b\r\nid: %b\r\ndata: %b\r\n\r\n" % (
        stored.type.encode(),
        stored.id.encode(),
        wire,
    )


def preview_frame(body: bytes) -> bytes:
    """One SSE frame for a preview; its event name is the preview's own type."""
    kind = b"event_delta" if body.startswith(b'{"type":"event_delta"') else b"event_start"
    return b"event: %b\r\ndata: %b\r\n\r\n" % (kind, body)


def deleted_frame() -> bytes:
    """The last frame of a stream whose session was deleted while it was open."""
    body = msgspec.json.encode(ev.SessionDeleted(id=new_id("sevt"), processed_at=now_ts()))
    return b"event: session.deleted\r\ndata: %b\r\n\r\n" % body


async def _next_wake(
    watch: Watch,
    after_seq: int,
    draining: anyio.Event,
    previews: MemoryObjectReceiveStream[Preview] | None,
) -> int | Preview | None:
    """The stream's new last seq, a preview, or None once the server starts draining."""
    result: int | Preview | None = None
    gone: NotFoundError | None = None

    async def wait_append() -> None:
        nonlocal result, gone
        try:
            result = await watch.wait(after_seq)
        except NotFoundError as exc:
            # Carried out by hand: raised here it would leave the group as an ExceptionGroup.
            gone = exc
        tg.cancel_scope.cancel()

    async def wait_preview(stream: MemoryObjectReceiveStream[Preview]) -> None:
        nonlocal result
        result = await stream.receive()
        tg.cancel_scope.cancel()

    async def wait_drain() -> None:
        await draining.wait()
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_append)
        tg.start_soon(wait_drain)
        if previews is not None:
            tg.start_soon(wait_preview, previews)
    if gone is not None:
        raise gone
    return None if draining.is_set() else result


async def tail(
    store: Store,
    session_id: str,
    *,
    after_seq: int | None,
    draining: anyio.Event,
    to_wire: Callable[[StoredEvent], bytes],
    deltas: DeltaHub | None = None,
    delta_kinds: frozenset[str] = frozenset(),
    closing_types: frozenset[str] = _CLOSING_TYPES,
) -> AsyncIterator[bytes]:
    """Frames of the events after `after_seq` (None: live only), then live ones, forever.

    Ends after `session.deleted` / `session.status_terminated`, or when the server drains.
    """
    # A preview can lose the race against its own final event; one for an event already
    # sent would make a client's accumulated message go backwards, so it is dropped.
    finished: deque[str] = deque(maxlen=64)
    subscription = (
        deltas.subscribe(session_id, delta_kinds)
        if deltas is not None and delta_kinds
        else nullcontext(None)
    )
    try:
        with subscription as previews:
            async with store.watch(session_id) as watch:
                # Taken after the watch is registered: an append racing this read is either
                # in `cursor` or wakes the watch, never lost in between.
                cursor = await store.last_seq(session_id) if after_seq is None else after_seq
                limit = _FIRST_BATCH
                while not draining.is_set():
                    batch = await store.read(session_id, EventQuery(after_seq=cursor, limit=limit))
                    for stored in batch:
                        yield frame(stored, to_wire(stored))
                        cursor = stored.seq
                        if stored.type in _PREVIEWED_TYPES:
                            finished.append(stored.id)
                        if stored.type in closing_types:
                            return
                    if len(batch) == limit:
                        limit = _BATCH
                        continue
                    while True:
                        woke = await _next_wake(watch, cursor, draining, previews)
                        if woke is None:
                            return
                        if isinstance(woke, Preview):
                            if woke.event_id not in finished:
                                yield preview_frame(woke.body)
                            continue
                        break
    except NotFoundError:
        yield deleted_frame()
