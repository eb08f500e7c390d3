"""The last few committed events of recently written streams, kept in memory.

Nearly every read of a running session asks for what follows the reader's last seq: an
SSE tail woken by a commit, the engine catching up with input the API just appended.
Those reads are answered here, on the loop, without a hop to a reader thread (each hop
was 0.3-4 ms under load in bench/engine_turn.py). Anything else goes to the database.

Only commits of this process enter the cache, in commit order, on the loop. It trusts
what it holds only while it holds it contiguously up to the stream's newest commit: a
commit that does not extend an entry (a gap, a deletion) replaces or drops it. A commit
written but not yet handed to the loop is not here yet; its readers are woken when it
is, so nothing is missed, only read a moment later.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from sessiond.store.protocol import StoredEvent

PER_STREAM = 64
"""Events kept per stream: a tail reader is rarely more than a few commits behind."""
TOTAL_BYTES = 16 << 20
"""Memory for all of them (events are counted by their body plus ~256 bytes); least
recently written streams go first, and a stream whose tail alone exceeds it is not kept."""
_OVERHEAD = 256


def _cost(event: StoredEvent) -> int:
    return len(event.data) + _OVERHEAD


class _Tail:
    __slots__ = ("events", "size")

    def __init__(self) -> None:
        self.events: deque[StoredEvent] = deque()
        self.size = 0


class TailCache:
    """Per stream, its newest events, contiguous, ending at its newest commit."""

    def __init__(self, per_stream: int = PER_STREAM, total_bytes: int = TOTAL_BYTES) -> None:
        self._entries: OrderedDict[str, _Tail] = OrderedDict()
        self._per_stream = per_stream
        self._total_bytes = total_bytes
        self._size = 0

    def committed(self, session_id: str, events: Sequence[StoredEvent], last_seq: int) -> None:
        """A commit of this process put `events` in the stream, which now ends at
        `last_seq` (-1: deleted). `events` may be empty (a no-op append)."""
        entry = self._entries.get(session_id)
        if last_seq < 0 or not events or events[-1].seq != last_seq:
            if not (entry and entry.events[-1].seq == last_seq):
                self.drop(session_id)
            return
        if entry is None or entry.events[-1].seq != events[0].seq - 1:
            self.drop(session_id)
            entry = self._entries[session_id] = _Tail()
        else:
            self._entries.move_to_end(session_id)
        for event in events:
            entry.events.append(event)
            entry.size += _cost(event)
            self._size += _cost(event)
        while len(entry.events) > self._per_stream:
            gone = _cost(entry.events.popleft())
            entry.size -= gone
            self._size -= gone
        if entry.size > self._total_bytes:  # alone over budget: not worth the others
            self.drop(session_id)
            return
        while self._size > self._total_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._size -= evicted.size

    def drop(self, session_id: str) -> None:
        """Forget a stream."""
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self._size -= entry.size

    def last_seq(self, session_id: str) -> int | None:
        """The stream's newest committed seq, if it is held."""
        entry = self._entries.get(session_id)
        return entry.events[-1].seq if entry else None

    def after(self, session_id: str, after_seq: int, limit: int | None) -> list[StoredEvent] | None:
        """Events after `after_seq` (at most `limit`), or None when not all are held."""
        tail = self._entries.get(session_id)
        if tail is None:
            return None
        entry = tail.events
        first = entry[0].seq
        if after_seq + 1 < first:
            return None
        start = after_seq + 1 - first
        if start >= len(entry):
            return []
        stop = len(entry) if limit is None else min(len(entry), start + limit)
        return [entry[i] for i in range(start, stop)]

    @property
    def size(self) -> int:
        """Bytes held, as counted against the budget."""
        return self._size
