"""Append throughput and latency through the store's public API, against raw sqlite3.

The ceiling is stdlib `sqlite3.executemany` into the same schema, in one transaction per
batch of 100 and of 1,000 events, at the same `synchronous` setting sessiond ships with.
"""

from __future__ import annotations

import gc
import sqlite3
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import Figure, Results, percentile
from sessiond.store.clock import new_id, now_ts
from sessiond.store.protocol import NewEvent, Record
from sessiond.store.sqlite import SQLiteStore
from sessiond.store.sqlite_schema import migrate

BODY = b'{"type":"user.message","content":[{"type":"text","text":"' + b"x" * 330 + b'"}]}'
assert 380 <= len(BODY) <= 420


def _ceiling(path: Path, total: int, batch: int, synchronous: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    migrate(conn)
    conn.execute(
        "INSERT INTO streams (session_id, record_kind, last_seq, created_at) VALUES (?,?,?,?)",
        ("sesn_raw", "session", 0, now_ts()),
    )
    seq = 0
    started = time.perf_counter()
    for _ in range(total // batch):
        rows = []
        for _ in range(batch):
            seq += 1
            rows.append(("sesn_raw", seq, new_id("sevt"), "user.message", BODY, now_ts()))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO events (session_id, seq, id, type, data, recorded_at)"
            " VALUES (?,?,?,?,?,?)",
            rows,
        )
        conn.execute("UPDATE streams SET last_seq=? WHERE session_id='sesn_raw'", (seq,))
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
    with tempfile.TemporaryDirectory() as tmp:
        ceilings = {}
        for batch in (100, 1000):
            ceilings[batch] = _ceiling(Path(tmp) / f"raw{batch}.db", total, batch, synchronous)
            results.add(
                Figure(
                    "append",
                    f"raw sqlite3 executemany, batch {batch}",
                    ceilings[batch],
                    "events/s",
                    params={"events": total, "synchronous": synchronous},
                )
            )
        ceiling = max(ceilings.values())
        rate_1000 = 0.0
        for sessions in (1, 100, 1000):
            per = max(1, min(2000, total // sessions)) if sessions > 1 else (500 if quick else 2000)
            rate, lat = anyio.run(_store_run, Path(tmp) / f"store{sessions}.db", sessions, per)
            ms = [x * 1000 for x in lat]
            target = "≥ 0.5 × ceiling" if sessions == 1000 else None
            results.add(
                Figure(
                    "append",
                    f"store.append, {sessions} concurrent sessions",
                    rate,
                    "events/s",
                    params={"sessions": sessions, "per_session": per, "synchronous": synchronous},
                    baseline=ceiling,
                    baseline_name="raw sqlite3 best batch",
                    target=target,
                    met=(rate / ceiling >= 0.5) if target else None,
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
        achieved, lat = anyio.run(lambda: _store_run(Path(tmp) / "half.db", 1000, per, rate=half))
        p99 = percentile([x * 1000 for x in lat], 99)
        results.add(
            Figure(
                "append",
                "append latency p99 at half the 1,000-session rate",
                p99,
                "ms",
                params={"offered_rate": round(half), "achieved": round(achieved)},
                target="≤ 10 ms",
                met=p99 <= 10,
            )
        )
