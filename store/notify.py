"""Append notifications and a small message bus, as one process sees them.

SQLite uses them alone (one process writes the file); PostgreSQL feeds them from
LISTEN/NOTIFY as well, so every process's watchers and subscribers hear of every commit.

Each watched stream has one channel holding only the latest committed seq and a future
that is resolved and replaced on every notification, so any number of waiters share one
future, and a slow waiter can never make anything queue up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sessiond.store.errors import NotFoundError

log = logging.getLogger("sessiond.store")


class _Channel:
    __slots__ = ("deleted", "future", "last_seq", "watchers")

    def __init__(self) -> None:
        self.last_seq = -1
        self.deleted = False
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watchers = 0

    def wake(self) -> None:
        """Resolve the current generation's future and start the next one."""
        done, self.future = self.future, asyncio.get_running_loop().create_future()
        if not done.done():  # a caller may have cancelled it, against the contract
            done.set_result(None)


class ChannelWatch:
    """A `Watch` over one channel."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    async def wait(self, after_seq: int) -> int:
        """Return the last committed seq once it is beyond `after_seq`."""
        channel = self._channel
        while True:
            future = self.next_commit(after_seq)
            if future is None:
                return channel.last_seq
            await asyncio.shield(future)  # shared by every watcher: never cancel it

    def next_commit(self, after_seq: int) -> asyncio.Future[None] | None:
        """None if past `after_seq`, else the future done at the next commit."""
        channel = self._channel
        if channel.deleted:
            raise NotFoundError("the session was deleted", code="session_deleted")
        if channel.last_seq > after_seq:
            return None
        return channel.future


class Notifier:
    """Registry of channels for streams somebody is watching."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    @asynccontextmanager
    async def watch(self, session_id: str) -> AsyncIterator[ChannelWatch]:
        """Hold a channel open for one watcher."""
        channel = self._channels.get(session_id)
        if channel is None:
            channel = self._channels[session_id] = _Channel()
        channel.watchers += 1
        try:
            yield ChannelWatch(channel)
        finally:
            channel.watchers -= 1
            if channel.watchers == 0 and self._channels.get(session_id) is channel:
                del self._channels[session_id]

    def appended(self, session_id: str, last_seq: int) -> None:
        """Wake the stream's watchers; call only after the commit is durable and visible."""
        channel = self._channels.get(session_id)
        if channel is None:
            return
        if last_seq > channel.last_seq:
            channel.last_seq = last_seq
        channel.wake()

    def deleted(self, session_id: str) -> None:
        """Tell the stream's watchers it is gone."""
        channel = self._channels.get(session_id)
        if channel is None:
            return
        channel.deleted = True
        channel.wake()

    def watched(self) -> int:
        """How many streams have watchers (to check nothing leaks)."""
        return len(self._channels)

    def wake_all(self) -> None:
        """Wake every watcher to read again (notifications may have been lost)."""
        for channel in self._channels.values():
            channel.wake()


class Bus:
    """Topics and their subscribers in this process; a callback must not block."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}

    def subscribe(self, topic: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(payload)` for each message on `topic`; returns the unsubscribe."""
        self._subscribers.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(topic, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._subscribers.pop(topic, None)

        return unsubscribe

    def emit(self, topic: str, payload: str) -> None:
        """Deliver to this process's subscribers (a failing one is logged, not raised)."""
        for callback in list(self._subscribers.get(topic, ())):
            try:
                callback(payload)
            except Exception:
                log.exception("a subscriber of %r failed", topic)
