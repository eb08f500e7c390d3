"""Records read recently, kept in memory: every request reads its API key's record and
its workspace's, and most read a session's, each a hop to a reader thread otherwise.

Only reads fill the cache, and only when no write to any record was delivered while the
read ran (a read that began before a write may return what the write replaced). Every
write names the records it touched and drops them, on the loop, before its caller hears
back, so a reader never sees a record older than a write it was told of.
"""

from __future__ import annotations

from collections import OrderedDict

from sessiond.store.protocol import Record

MAX_RECORDS = 10_000


class RecordCache:
    """(kind, id) -> Record, least recently used out first."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._records: OrderedDict[tuple[str, str], Record] = OrderedDict()
        self._max = max_records
        self.epoch = 0
        """Counts deliveries of record writes; a fill whose read saw it change is dropped."""

    def get(self, kind: str, record_id: str) -> Record | None:
        record = self._records.get((kind, record_id))
        if record is not None:
            self._records.move_to_end((kind, record_id))
        return record

    def fill(self, record: Record, epoch: int) -> None:
        """Keep what a read returned, if no record write was delivered since `epoch`."""
        if epoch != self.epoch:
            return
        self._records[(record.kind, record.id)] = record
        if len(self._records) > self._max:
            self._records.popitem(last=False)

    def written(self, keys: list[tuple[str, str]]) -> None:
        """Records were written (or deleted): forget them."""
        self.epoch += 1
        for key in keys:
            self._records.pop(key, None)
