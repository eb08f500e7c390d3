"""Live previews (`event_start` / `event_delta`) from in-flight model calls to SSE subscribers.

Previews are never stored and are best effort by contract: each subscriber has a small
bounded buffer, and a subscriber too slow to drain it misses previews (the final
persisted event carries the full content anyway). Nothing here can grow without bound
or slow down the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

BUFFER = 512


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


class DeltaHub:
    """Fan-out of previews per session, in-process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self.dropped = 0
        """Previews not delivered because a subscriber's buffer was full."""

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
        """Whether anyone listens (so the engine can skip encoding previews nobody reads)."""
        return session_id in self._subscribers

    def publish(self, session_id: str, preview: Preview) -> None:
        """Offer a preview to every subscriber that asked for its kind; never blocks."""
        for subscriber in tuple(self._subscribers.get(session_id, ())):
            if preview.kind not in subscriber.kinds:
                continue
            try:
                subscriber.send.send_nowait(preview)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
