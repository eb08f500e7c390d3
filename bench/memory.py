"""Resident memory of the server process: per idle session, per idle SSE connection, and
growth over a soak of continuous turns (scripted model, in the server's own process)."""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

from bench.common import ADMIN_KEY, Figure, Results, Server, make_session, rss_kib

N = 1000


def _open_streams(url: str, session_ids: list[str]) -> list[socket.socket]:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    socks = []
    for index in range(N):
        sock = socket.create_connection((host, port))
        session_id = session_ids[index % len(session_ids)]
        sock.sendall(
            f"GET /v1/sessions/{session_id}/events/stream HTTP/1.1\r\nHost: x\r\n"
            f"x-api-key: {ADMIN_KEY}\r\n\r\n".encode()
        )
        socks.append(sock)
    for sock in socks:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(4096)
    return socks


def run(results: Results, *, quick: bool) -> None:
    soak_s = 60 if quick else 600
    with tempfile.TemporaryDirectory() as tmp, Server(Path(tmp)) as server:
        with server.client() as client:
            warm = [make_session(client) for _ in range(20)]
            socks = _open_streams(server.url, warm[:1])[:0]  # warm the stream path
            time.sleep(1)
            before = rss_kib(server.pid)
            sessions = [make_session(client) for _ in range(N)]
            time.sleep(1)
            after_sessions = rss_kib(server.pid)
            per_session = (after_sessions - before) / N
            results.add(
                Figure(
                    "memory",
                    "RSS per idle session",
                    per_session,
                    "KiB",
                    params={"sessions": N, "rss_before_kib": before},
                    target="≤ 20 KiB",
                    met=per_session <= 20,
                )
            )
            socks = _open_streams(server.url, sessions)
            time.sleep(1)
            after_streams = rss_kib(server.pid)
            per_stream = (after_streams - after_sessions) / N
            results.add(
                Figure(
                    "memory",
                    "RSS per idle SSE connection",
                    per_stream,
                    "KiB",
                    params={"connections": N},
                    target="≤ 50 KiB",
                    met=per_stream <= 50,
                )
            )
            for sock in socks:
                sock.close()
            # Soak: turns back to back on a few sessions; compare RSS after warm-up and at end.
            body = {
                "events": [{"type": "user.message", "content": [{"type": "text", "text": "soak"}]}]
            }
            deadline = time.monotonic() + soak_s
            warmup_at = time.monotonic() + soak_s * 0.2
            start_rss = None
            turns = 0
            while time.monotonic() < deadline:
                for session_id in warm[:10]:
                    client.post(f"/v1/sessions/{session_id}/events", json=body)
                    turns += 1
                time.sleep(0.05)
                if start_rss is None and time.monotonic() >= warmup_at:
                    start_rss = rss_kib(server.pid)
            end_rss = rss_kib(server.pid)
            growth = (end_rss - (start_rss or end_rss)) / max(1, start_rss or end_rss) * 100
            results.add(
                Figure(
                    "memory",
                    f"RSS growth over a {soak_s} s soak",
                    growth,
                    "%",
                    params={"turns": turns, "start_kib": start_rss, "end_kib": end_rss},
                    target="no growth (≤ 5%)",
                    met=growth <= 5,
                )
            )
