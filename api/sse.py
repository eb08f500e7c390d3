"""The session event stream: replay from a position, then a live tail, as SSE frames.

Every frame has an `event:` line (the SDK drops frames without one) and persisted events
carry `id: <event id>`, so `Last-Event-ID` resumes exactly after the last frame a client
saw. Previews (`event_start` / `event_delta`) carry no `id:`, so a resume id always names
a persisted event. The tail re-reads the log after each nudge from the store's watch:
the log is the buffer, the nudge holds one number, and a slow client costs no memory here.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from sessiond.api.auth import principal
from sessiond.runtime.engine.deltas import DeltaHub, Preview
from sessiond.runtime.wire import events as ev
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import NotFoundError, RateLimitedError
from sessiond.store.protocol import EventQuery, Store, StoredEvent, Watch

_BATCH = 256
_FIRST_BATCH = 16
"""The first read is small, so a resuming client gets its first event before the rest
of a long backlog has been read (measured in bench/resume.py)."""
_CLOSING_TYPES = frozenset({"session.deleted", "session.status_terminated"})
_PREVIEWED_TYPES = frozenset({"agent.message", "agent.thinking"})


_inflight: dict[tuple[int, str, int, int], asyncio.Task[list[StoredEvent]]] = {}


async def shared_read(
    store: Store, session_id: str, after_seq: int, limit: int
) -> list[StoredEvent]:
    """`store.read`, shared by every stream asking for the same page at the same time.

    An append wakes every stream tailing its session at once, all at the same cursor: one
    read serves them all instead of one each (measured in bench/sse_fanout.py). A stream
    that joins a read already under way may miss an append committed after it began; its
    watch then wakes it again at once, so nothing is lost, only read by the next round.
    The read runs in its own task, so a client that disconnects cannot cancel it for the
    others.
    """
    key = (id(store), session_id, after_seq, limit)
    task = _inflight.get(key)
    if task is None:
        task = asyncio.ensure_future(
            store.read(session_id, EventQuery(after_seq=after_seq, limit=limit))
        )
        _inflight[key] = task
        task.add_done_callback(lambda _: _inflight.pop(key, None))
    return await asyncio.shield(task)


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


class _Wakes:
    """What a tail waits on between reads: appends, previews, and the server's drain.

    The drain and preview waits are long-lived tasks reused across wakes, and an append
    wait is the store's shared next-commit future (waited on, never cancelled). A wait
    registers one bound method on each and removes it after: no task group, cancel scope,
    task, or `asyncio.wait` (its set, closure and counter) per wake; with 1,000 clients
    those were most of the server's CPU (bench/sse_fanout.py).
    """

    def __init__(
        self,
        watch: Watch,
        draining: anyio.Event,
        previews: MemoryObjectReceiveStream[Preview] | None,
    ) -> None:
        self._watch = watch
        self._loop = asyncio.get_running_loop()
        self._drain = asyncio.ensure_future(draining.wait())
        self._previews = previews
        self._preview: asyncio.Future[Preview] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self, _: object) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, after_seq: int) -> int | Preview | None:
        """A sign to read again (an int), a preview, or None once the server drains."""
        while True:
            if self._drain.done():
                return None
            preview = self._preview
            if preview is not None and preview.done():
                self._preview = None
                try:
                    return preview.result()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    self._previews = None
            commit = self._watch.next_commit(after_seq)  # raises once the session is deleted
            if commit is None:
                return after_seq + 1
            if self._previews is not None and self._preview is None:
                self._preview = asyncio.ensure_future(self._previews.receive())
            sources = (commit, self._drain, self._preview)
            self._waiter = self._loop.create_future()
            for source in sources:
                if source is not None:
                    source.add_done_callback(self._wake)
            try:
                await self._waiter
            finally:
                for source in sources:
                    if source is not None:
                        source.remove_done_callback(self._wake)
            if commit.done():
                return after_seq + 1

    def close(self) -> None:
        """Stop the long-lived waits."""
        self._drain.cancel()
        if self._preview is not None:
            self._preview.cancel()


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
                wakes = _Wakes(watch, draining, previews)
                try:
                    # Taken after the watch is registered: an append racing this read is either
                    # in `cursor` or wakes the watch, never lost in between.
                    cursor = await store.last_seq(session_id) if after_seq is None else after_seq
                    limit = _FIRST_BATCH
                    while not draining.is_set():
                        batch = await shared_read(store, session_id, cursor, limit)
                        # A batch goes out as one write (one send syscall, not one per
                        # event); a closing event ends it.
                        frames: list[bytes] = []
                        closed = False
                        for stored in batch:
                            frames.append(frame(stored, to_wire(stored)))
                            cursor = stored.seq
                            if stored.type in _PREVIEWED_TYPES:
                                finished.append(stored.id)
                            if stored.type in closing_types:
                                closed = True
                                break
                        if frames:
                            yield b"".join(frames)
                        if closed:
                            return
                        if len(batch) == limit:
                            limit = _BATCH
                            continue
                        while True:
                            woke = await wakes.next(cursor)
                            if woke is None:
                                return
                            if isinstance(woke, Preview):
                                if woke.event_id not in finished:
                                    yield preview_frame(woke.body)
                                continue
                            break
                finally:
                    wakes.close()
    except NotFoundError:
        yield deleted_frame()


"""The store bus topic a key's revocation is announced on, to every process."""


class StreamSlots:
    """How many event streams each API key holds open, bounded per key.

    A slot is taken before the response starts (so an over-limit client gets a 429, not a
    stream that ends at once) and given back when the stream's body is finished or
    dropped: `weakref.finalize` on the body covers a client that leaves before its first
    frame, when the body's own `finally` never runs.
    """

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: Counter[str] = Counter()
        self._revoked: set[str] = set()

    def revoke(self, key_id: str) -> None:
        """The key was revoked: its open streams send nothing more and end at their next
        frame (new ones are refused by authentication)."""
        self._revoked.add(key_id)

    def open(self, key_id: str) -> int:
        """Streams this key holds open now."""
        return self._open[key_id]

    def hold(self, key_id: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`body`, holding one of the key's slots while it lives; raises RateLimitedError
        (429) when the key holds `per_key` streams already."""
        if self._open[key_id] >= self.per_key:
            raise RateLimitedError(
                f"this API key holds {self._open[key_id]} open event streams, the most this "
                f"server allows (SESSIOND_MAX_STREAMS_PER_KEY={self.per_key}); close one first",
                code="too_many_streams",
                retryable=False,
            )
        self._open[key_id] += 1
        return _Held(body, lambda: self._release(key_id), lambda: key_id in self._revoked)

    def _release(self, key_id: str) -> None:
        self._open[key_id] -= 1
        if self._open[key_id] <= 0:
            del self._open[key_id]


class _Held:
    """An async iterator over `body` that gives its slot back exactly once: when the body
    ends or fails, when it is closed, or (never iterated) when it is garbage."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        release: Callable[[], None],
        revoked: Callable[[], bool],
    ) -> None:
        self._body = body
        self._revoked = revoked
        self._release = weakref.finalize(self, release)

    def __aiter__(self) -> _Held:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._body.__anext__()
        except BaseException:
            self._release()
            raise
        if self._revoked():
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Close the body and give the slot back."""
        self._release()
        close = getattr(self._body, "aclose", None)
        if close is not None:
            await close()


async def event_source(request: Request, body: AsyncIterator[bytes]) -> EventSourceResponse:
    """The SSE response for a stream body, holding one of the caller's key's stream slots
    (429 past the limit) and using the server's ping and send-timeout settings."""
    key_id = (await principal(request)).key_id
    held = request.app.state.stream_slots.hold(key_id, body)
    config = request.app.state.config
    return EventSourceResponse(
        held, ping=config.sse_ping_s, send_timeout=config.sse_send_timeout_s, sep="\r\n"
    )
