"""Append throughput and latency through the store's public API, against raw sqlite3.

The ceiling is stdlib `sqlite3.executemany` into the same schema, in one transaction per
batch, at the same `synchronous` setting sessiond ships with: for one stream (batches of
100 and 1,000), and for the same work as each store run (the same number of streams, the
events round-robin over them, each commit setting the touched streams' last seq). The
target compares like with like: 1,000 interleaved streams dirty pages all over the
(session_id, seq) index and update 1,000 stream rows per commit, which costs any writer
~30% more than appending to one stream.
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import tempfile
import time
from itertools import count
from pathlib import Path

import anyio

from bench.common import Figure, Results, percentile
from sessiond.store.clock import new_id, now_ts
from sessiond.store.protocol import NewEvent, Record
from sessiond.store.sqlite import SQLiteStore
from sessiond.store.sqlite_schema import migrate

BODY = b'{"type":"user.message","content":[{"type":"text","text":"' + b"x" * 330 + b'"}]}'
assert 380 <= len(BODY) <= 420


def _ceiling(path: Path, total: int, batch: int, synchronous: str, streams: int = 1) -> float:
    """Raw executemany of `total` events, round-robin over `streams` sessions, one
    transaction per `batch` that also sets each touched stream's last seq."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    migrate(conn)
    ids = [new_id("sesn") for _ in range(streams)]
    conn.executemany(
        "INSERT INTO streams (session_id, record_kind, last_seq, created_at) VALUES (?,?,?,?)",
        [(i, "session", 0, now_ts()) for i in ids],
    )
    seqs = dict.fromkeys(ids, 0)
    n = 0
    started = time.perf_counter()
    for _ in range(total // batch):
        rows = []
        for _ in range(batch):
            session_id = ids[n % streams]
            n += 1
            seqs[session_id] += 1
            rows.append(
                (session_id, seqs[session_id], new_id("sevt"), "user.message", BODY, now_ts())
            )
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (session_id, seq, id, type, data, recorded_at)"
            " VALUES (?,?,?,?,?,?)",
            rows,
        )
        touched = {row[0] for row in rows}
        conn.executemany(
            "UPDATE streams SET last_seq=? WHERE session_id=?", [(seqs[t], t) for t in touched]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return total / elapsed


async def _store_run(
    path: Path, sessions: int, per_session: int, *, rate: float | None = None
) -> tuple[float, list[float]]:
    gc.freeze()  # as `sessiond serve` does after its imports (api/serve.py)
    store = SQLiteStore(str(path))
    await store.open()
    ids = []
    for _ in range(sessions):
        now = now_ts()
        record = Record(
            kind="bench",
            id=new_id("sesn"),
            workspace_id="ws",
            data=b"{}",
            created_at=now,
            updated_at=now,
        )
        await store.create_stream(record)
        ids.append(record.id)
    latencies: list[float] = []
    event = [NewEvent(type="user.message", data=BODY)]
    interval = sessions / rate if rate else 0.0

    async def writer(session_id: str, offset: float) -> None:
        if interval:
            await anyio.sleep(offset)
        for _ in range(per_session):
            begun = time.perf_counter()
            await store.append(session_id, event, expected_seq=None)
            took = time.perf_counter() - begun
            latencies.append(took)
            if interval:
                await anyio.sleep(max(0.0, interval - took))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index, session_id in enumerate(ids):
            tg.start_soon(writer, session_id, index * interval / max(1, sessions))
    elapsed = time.perf_counter() - started
    await store.close()
    return sessions * per_session / elapsed, latencies


def run(results: Results, *, quick: bool) -> None:
    total = 10_000 if quick else 50_000
    synchronous = "FULL"  # what SQLiteStore ships with
    rounds = 3  # the store and its ceiling alternate; medians are reported (noisy machines)
    with tempfile.TemporaryDirectory() as tmp:
        files = count()

        def db() -> Path:
            return Path(tmp) / f"{next(files)}.db"

        one_stream = {}
        for batch in (100, 1000):
            one_stream[batch] = _ceiling(db(), total, batch, synchronous)
            results.add(
                Figure(
                    "append",
                    f"raw sqlite3 executemany, one stream, batch {batch}",
                    one_stream[batch],
                    "events/s",
                    params={"events": total, "synchronous": synchronous},
                )
            )
        best_one = max(one_stream.values())
        rate_1000 = 0.0
        for sessions in (1, 100, 1000):
            per = {1: 500, 100: 100, 1000: 20}[sessions] * (1 if quick else 4)
            events = sessions * per
            rates, ceilings, ms = [], [], []
            for _ in range(rounds if sessions == 1000 else 1):
                # At least `total` events, so that the ceiling runs long enough to mean
                # something (it is a rate: more events do not make it easier).
                ceilings.append(_ceiling(db(), max(events, total), 1000, synchronous, sessions))
                rate, lat = anyio.run(_store_run, db(), sessions, per)
                rates.append(rate)
                ms += [x * 1000 for x in lat]
            rate, ceiling = statistics.median(rates), statistics.median(ceilings)
            ratio = statistics.median(r / c for r, c in zip(rates, ceilings, strict=True))
            target = "≥ 0.5 × ceiling" if sessions == 1000 else None
            results.add(
                Figure(
                    "append",
                    f"store.append, {sessions} concurrent sessions",
                    rate,
                    "events/s",
                    params={
                        "sessions": sessions,
                        "per_session": per,
                        "synchronous": synchronous,
                        "rounds": len(rates),
                        "median_ratio": ratio,
                        "ratio_to_one_stream_ceiling": rate / best_one,
                    },
                    baseline=ceiling,
                    baseline_name=f"raw sqlite3, same {sessions} streams, batch 1000"
                    + ("; ratio: median of the rounds'" if len(rates) > 1 else ""),
                    ratio=ratio,
                    target=target,
                    met=(ratio >= 0.5) if target else None,
                )
            )
            results.add(
                Figure(
                    "append", f"append latency p50, {sessions} sessions", percentile(ms, 50), "ms"
                )
            )
            results.add(
                Figure(
                    "append", f"append latency p99, {sessions} sessions", percentile(ms, 99), "ms"
                )
            )
            if sessions == 1000:
                rate_1000 = rate
        half = rate_1000 / 2
        per = 20 if quick else 60
        p99s, achieved = [], []
        for _ in range(rounds):
            got, lat = anyio.run(lambda: _store_run(db(), 1000, per, rate=half))
            achieved.append(got)
            p99s.append(percentile([x * 1000 for x in lat], 99))
        p99 = statistics.median(p99s)
        results.add(
            Figure(
                "append",
                "append latency p99 at half the 1,000-session rate",
                p99,
                "ms",
                params={
                    "offered_rate": round(half),
                    "achieved": round(statistics.median(achieved)),
                    "rounds_p99_ms": [round(x, 1) for x in p99s],
                },
                target="≤ 10 ms",
                met=p99 <= 10,
            )
        )
