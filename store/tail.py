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
TOTAL = 16_384
"""Events kept in all (~7 MiB of 400-byte events); least recently written streams go first."""


class TailCache:
    """Per stream, its newest events, contiguous, ending at its newest commit."""

    def __init__(self, per_stream: int = PER_STREAM, total: int = TOTAL) -> None:
        self._entries: OrderedDict[str, deque[StoredEvent]] = OrderedDict()
        self._per_stream = per_stream
        self._total = total
        self._count = 0

    def committed(self, session_id: str, events: Sequence[StoredEvent], last_seq: int) -> None:
        """A commit of this process put `events` in the stream, which now ends at
        `last_seq` (-1: deleted). `events` may be empty (a no-op append)."""
        entry = self._entries.get(session_id)
        if last_seq < 0 or not events or events[-1].seq != last_seq:
            if not (entry and entry[-1].seq == last_seq):
                self.drop(session_id)
            return
        if entry is None or entry[-1].seq != events[0].seq - 1:
            self.drop(session_id)
            entry = self._entries[session_id] = deque(maxlen=self._per_stream)
        else:
            self._entries.move_to_end(session_id)
        self._count -= len(entry)
        entry.extend(events)
        self._count += len(entry)
        while self._count > self._total and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self._count -= len(evicted)

    def drop(self, session_id: str) -> None:
        """Forget a stream."""
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self._count -= len(entry)

    def last_seq(self, session_id: str) -> int | None:
        """The stream's newest committed seq, if it is held."""
        entry = self._entries.get(session_id)
        return entry[-1].seq if entry else None

    def after(self, session_id: str, after_seq: int, limit: int | None) -> list[StoredEvent] | None:
        """Events after `after_seq` (at most `limit`), or None when not all are held."""
        entry = self._entries.get(session_id)
        if not entry:
            return None
        first = entry[0].seq
        if after_seq + 1 < first:
            return None
        start = after_seq + 1 - first
        if start >= len(entry):
            return []
        stop = len(entry) if limit is None else min(len(entry), start + limit)
        return [entry[i] for i in range(start, stop)]

    def __len__(self) -> int:
        return self._count
