"""Run inside the `eventsourcing` peer's own virtual environment; prints one JSON object.

The package's SQLite aggregate recorder, as its docs use it: one `insert_events` call per
event (each its own commit), to 1 aggregate and round-robin to N aggregates, then a
catch-up read of one aggregate after its middle version. Usage: python this.py DB N
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteDatastore

PAYLOAD = b'{"type":"user.message","text":"' + b"x" * 360 + b'"}'


def _recorder(path: str) -> tuple[SQLiteDatastore, SQLiteAggregateRecorder]:
    datastore = SQLiteDatastore(path)
    recorder = SQLiteAggregateRecorder(datastore)
    recorder.create_table()
    return datastore, recorder


def _appends(recorder: SQLiteAggregateRecorder, aggregates: int, events: int) -> float:
    ids = [uuid.uuid4() for _ in range(aggregates)]
    versions = [0] * aggregates
    started = time.perf_counter()
    for i in range(events):
        k = i % aggregates
        versions[k] += 1
        recorder.insert_events(
            [
                StoredEvent(
                    originator_id=ids[k], originator_version=versions[k], topic="t", state=PAYLOAD
                )
            ]
        )
    return events / (time.perf_counter() - started)


def main() -> None:
    path, many = sys.argv[1], int(sys.argv[2])
    datastore, recorder = _recorder(path)
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cursor.fetchone()[0]]
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
    n = 2000
    one = _appends(recorder, 1, n)
    spread = _appends(recorder, many, max(n, many * 2))
    # Catch-up: an aggregate of 1,000 events, read after its 500th.
    agg = uuid.uuid4()
    for v in range(1, 1001):
        recorder.insert_events(
            [StoredEvent(originator_id=agg, originator_version=v, topic="t", state=PAYLOAD)]
        )
    times = []
    for _ in range(200):
        started = time.perf_counter()
        got = recorder.select_events(agg, gt=500)
        times.append(time.perf_counter() - started)
        assert len(got) == 500
    times.sort()
    print(
        json.dumps(
            {
                "synchronous": synchronous,
                "journal_mode": journal,
                "appends_per_s_1": one,
                "appends_per_s_many": spread,
                "aggregates": many,
                "catch_up_p50_ms": times[len(times) // 2] * 1000,
                "catch_up_p99_ms": times[int(len(times) * 0.99)] * 1000,
            }
        )
    )


if __name__ == "__main__":
    main()
