"""Live previews (`event_start` / `event_delta`) from in-flight model calls to SSE subscribers.

Previews are never stored and are best effort by contract: each subscriber has a small
bounded buffer, and a subscriber too slow to drain it misses previews (the final
persisted event carries the full content anyway). Nothing here can grow without bound
or slow down the engine.

With several processes on one database (PostgreSQL), a session's model call runs in one
process while its SSE clients may be connected to any other. The hub then also sends each
preview through the store's bus (NOTIFY), tagged with its origin so that it is delivered
once in every process. Previews bound for the bus are gathered for up to `FLUSH_S` and
sent together (a model streaming 40 deltas in a burst costs one NOTIFY, not 40); what is
still gathered when the response ends is sent then. Batches stay under the bus's payload
bound; a single preview over it is not sent across (the final event carries it anyway).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sessiond.store.clock import new_id
from sessiond.store.protocol import Store

log = logging.getLogger("sessiond.deltas")

BUFFER = 512
TOPIC = "deltas"
FLUSH_S = 0.025
_MAX_BUS_BYTES = 6000
_MAX_GATHERED = 64


class Preview(msgspec.Struct, frozen=True):
    """One preview frame's payload: which final event it previews, of which kind."""

    event_id: str
    kind: str
    """`agent.message` or `agent.thinking`: what a stream request opts into."""
    body: bytes


class _Subscriber:
    __slots__ = ("kinds", "send")

    def __init__(self, kinds: frozenset[str], send: MemoryObjectSendStream[Preview]) -> None:
        self.kinds = kinds
        self.send = send


class _Remote(msgspec.Struct, array_like=True):
    """Previews as they cross the bus: origin, session, and (event id, kind, base64 body)s."""

    origin: str
    session_id: str
    previews: list[tuple[str, str, str]]


_encode_remote = msgspec.json.Encoder().encode
_decode_remote = msgspec.json.Decoder(_Remote).decode


class DeltaHub:
    """Fan-out of previews per session: in-process, and across processes through `bus`."""

    def __init__(self, bus: Store | None = None) -> None:
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self.dropped = 0
        """Previews not delivered because a subscriber's buffer was full."""
        self._bus = bus
        self._origin = new_id("hub")
        self._gathered: dict[str, list[tuple[str, str, str]]] = {}
        self._flushed_at: dict[str, float] = {}
        if bus is not None:
            bus.subscribe(TOPIC, self._from_bus)

    @contextmanager
    def subscribe(
        self, session_id: str, kinds: frozenset[str]
    ) -> Iterator[MemoryObjectReceiveStream[Preview]]:
        """Receive previews of `kinds` for one session while the context is open."""
        send, receive = anyio.create_memory_object_stream[Preview](BUFFER)
        subscriber = _Subscriber(kinds, send)
        self._subscribers.setdefault(session_id, set()).add(subscriber)
        try:
            yield receive
        finally:
            subscribers = self._subscribers.get(session_id)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._subscribers[session_id]
            send.close()
            receive.close()

    def wants(self, session_id: str) -> bool:
        """Whether anyone may listen (so the engine can skip encoding previews nobody
        reads); across processes, nobody here can tell, so always."""
        return self._bus is not None or session_id in self._subscribers

    async def publish(self, session_id: str, preview: Preview) -> None:
        """Offer a preview to every subscriber that asked for its kind, here and (with a
        bus) in every other process; never blocks on a subscriber."""
        self._deliver(session_id, preview)
        if self._bus is None:
            return
        gathered = self._gathered.setdefault(session_id, [])
        gathered.append((preview.event_id, preview.kind, base64.b64encode(preview.body).decode()))
        now = time.monotonic()
        if now - self._flushed_at.get(session_id, 0.0) >= FLUSH_S or len(gathered) >= _MAX_GATHERED:
            await self.flush(session_id)

    async def flush(self, session_id: str, *, final: bool = False) -> None:
        """Send what is gathered for the session across; `final` when its response has
        ended (the engine says so), which also forgets the session here."""
        gathered = self._gathered.pop(session_id, None)
        if final:
            self._flushed_at.pop(session_id, None)
        else:
            self._flushed_at[session_id] = time.monotonic()
        if self._bus is None or not gathered:
            return
        batch: list[tuple[str, str, str]] = []
        size = 0
        for item in gathered:
            cost = len(item[2]) + len(item[0]) + 24
            if cost > _MAX_BUS_BYTES:
                continue  # over the bound alone: not sent across
            if size + cost > _MAX_BUS_BYTES:
                await self._send(session_id, batch)
                batch, size = [], 0
            batch.append(item)
            size += cost
        await self._send(session_id, batch)

    async def _send(self, session_id: str, batch: list[tuple[str, str, str]]) -> None:
        if not batch or self._bus is None:
            return
        message = _encode_remote(_Remote(self._origin, session_id, batch)).decode()
        try:
            await self._bus.publish(TOPIC, message)
        except Exception as exc:
            # Best effort by contract: a preview that cannot cross is dropped, and the
            # model call it belongs to goes on (failing it would re-send, and re-bill, it).
            self.dropped += len(batch)
            log.debug("previews for %s not sent across: %s", session_id, exc)

    def _from_bus(self, message: str) -> None:
        try:
            remote = _decode_remote(message)
        except msgspec.DecodeError:
            return
        if remote.origin == self._origin:
            return  # delivered here already
        for event_id, kind, body in remote.previews:
            self._deliver(remote.session_id, Preview(event_id, kind, base64.b64decode(body)))

    def _deliver(self, session_id: str, preview: Preview) -> None:
        for subscriber in tuple(self._subscribers.get(session_id, ())):
            if preview.kind not in subscriber.kinds:
                continue
            try:
                subscriber.send.send_nowait(preview)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
