"""In-process append notifications: the SQLite backend's stand-in for LISTEN/NOTIFY.

Each watched stream has one channel holding only the latest committed seq and an event
that is swapped on every notification, so any number of waiters cost one Event, and a
slow waiter can never make anything queue up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from sessiond.store.errors import NotFoundError


class _Channel:
    __slots__ = ("deleted", "event", "last_seq", "watchers")

    def __init__(self) -> None:
        self.last_seq = -1
        self.deleted = False
        self.event = anyio.Event()
        self.watchers = 0


class ChannelWatch:
    """A `Watch` over one channel."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    async def wait(self, after_seq: int) -> int:
        """Return the last committed seq once it is beyond `after_seq`."""
        channel = self._channel
        while True:
            if channel.deleted:
                raise NotFoundError("the session was deleted", code="session_deleted")
            if channel.last_seq > after_seq:
                return channel.last_seq
            await channel.event.wait()


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
        event, channel.event = channel.event, anyio.Event()
        event.set()

    def deleted(self, session_id: str) -> None:
        """Tell the stream's watchers it is gone."""
        channel = self._channels.get(session_id)
        if channel is None:
            return
        channel.deleted = True
        event, channel.event = channel.event, anyio.Event()
        event.set()

    def watched(self) -> int:
        """How many streams have watchers (to check nothing leaks)."""
        return len(self._channels)
