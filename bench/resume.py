"""Resumption cost: time to the first replayed event for `?after=` at a session's midpoint,
for a 1,000-event session and a 1,000,000-event one, in a database of 10,000,000 events
(`--quick`: 100,000 and 1,000,000)."""

from __future__ import annotations

import socket
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from bench.common import ADMIN_KEY, Figure, Results, Server, make_session, percentile

BODY = b'{"type":"user.message","content":[{"type":"text","text":"' + b"r" * 330 + b'"}]}'
TRIALS = 150


def _fill(db: Path, targets: dict[str, int], total: int) -> dict[str, str]:
    """Bulk-insert events (raw sqlite3, the server stopped); returns each target's mid id."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    position = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    stamp = "2026-11-24T00:00:00.000000Z"
    filler_total = total - sum(targets.values())
    per_filler = 10_000
    streams = [(f"sesn_filler{i:07d}", per_filler) for i in range(filler_total // per_filler)]
    mids: dict[str, str] = {}
    # Interleave: targets get their events spread through the file, as real traffic would.
    plan = [*targets.items(), *streams]
    conn.execute("BEGIN")
    for session_id, count in plan:
        if session_id.startswith("sesn_filler"):
            conn.execute(
                "INSERT INTO streams (session_id, record_kind, last_seq, created_at)"
                " VALUES (?,?,?,?)",
                (session_id, "session", count, stamp),
            )
        rows = []
        for seq in range(1, count + 1):
            position += 1
            event_id = f"sevt_b{position:024d}"
            if seq == count // 2 and session_id in targets:
                mids[session_id] = event_id
            rows.append((position, session_id, seq, event_id, "user.message", BODY, stamp))
            if len(rows) == 50_000:
                conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", rows)
                rows.clear()
        conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?)", rows)
        if session_id in targets:
            conn.execute("UPDATE streams SET last_seq=? WHERE session_id=?", (count, session_id))
    conn.execute("COMMIT")
    conn.close()
    return mids


def _first_event_ms(url: str, session_id: str, after: str) -> float:
    """Open the stream with `?after=` over a raw socket; ms until the first `id:` frame."""
    parsed = urlparse(url)
    request = (
        f"GET /v1/sessions/{session_id}/events/stream?after={after} HTTP/1.1\r\n"
        f"Host: {parsed.hostname}\r\nx-api-key: {ADMIN_KEY}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        started = time.perf_counter()
        sock.sendall(request)
        buffer = b""
        while b"\nid: " not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"stream closed: {buffer[:200]!r}")
            buffer += chunk
        return (time.perf_counter() - started) * 1000


def run(results: Results, *, quick: bool) -> None:
    small, big, total = (1_000, 100_000, 1_000_000) if quick else (1_000, 1_000_000, 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with Server(workdir) as server, server.client() as client:
            small_id, big_id = make_session(client), make_session(client)
        built = time.monotonic()
        mids = _fill(workdir / "sessiond.db", {small_id: small, big_id: big}, total)
        print(f"  (built a {total:,}-event database in {time.monotonic() - built:.0f} s)")
        with Server(workdir) as server:
            timings: dict[int, list[float]] = {small: [], big: []}
            sessions = ((small, small_id), (big, big_id))
            for _, session_id in sessions:
                _first_event_ms(server.url, session_id, mids[session_id])  # warm
            # The two sessions alternate, so that the machine's noise falls on both alike.
            for _ in range(TRIALS):
                for size, session_id in sessions:
                    timings[size].append(_first_event_ms(server.url, session_id, mids[session_id]))
                    # Let the server finish with the closed stream before the next trial:
                    # back to back, its leftover writes land inside the next measurement.
                    time.sleep(0.05)
    params = {"database_events": total, "trials": TRIALS}
    p50s = {size: percentile(t, 50) for size, t in timings.items()}
    p99s = {size: percentile(t, 99) for size, t in timings.items()}
    results.add(
        Figure(
            "resume",
            f"first replayed event, {small:,}-event session, p50",
            p50s[small],
            "ms",
            params=params,
        )
    )
    results.add(
        Figure(
            "resume",
            f"first replayed event, {big:,}-event session, p50",
            p50s[big],
            "ms",
            params=params,
            baseline=p50s[small],
            baseline_name=f"{small:,}-event session",
            target="≤ 1.5×",
            met=p50s[big] <= 1.5 * p50s[small],
        )
    )
    results.add(
        Figure(
            "resume",
            f"first replayed event, {big:,}-event session, p99",
            p99s[big],
            "ms",
            params=params,
            baseline=p99s[small],
            baseline_name=f"{small:,}-event session p99",
            target="≤ 5 ms",
            met=p99s[big] <= 5,
        )
    )
