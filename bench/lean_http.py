"""A minimal HTTP/1.1 client on asyncio streams, for load that must not be client-bound.

On a 2-core machine the server under test and the load generator share the cores; httpx
spent ~90% of a core driving sessiond at concurrency 64, so the figure measured httpx.
This client does one request at a time per keep-alive connection, understands
Content-Length and chunked bodies, and nothing else. Both peers are driven by it.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse


def host_port(url: str) -> tuple[str, int]:
    """The host and port of a `http://host:port` URL."""
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return parsed.hostname, parsed.port


class LeanConnection:
    """One keep-alive connection to `host:port`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, host: str, port: int) -> LeanConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    def _send_head(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def _read_head(self) -> tuple[int, dict[bytes, bytes]]:
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request and read its whole response: (status, body)."""
        self._send_head(method, path, headers or {}, body)
        status, response_headers = await self._read_head()
        if response_headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await self._reader.readuntil(b"\r\n")  # no trailers expected
                    break
                parts.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            return status, b"".join(parts)
        length = int(response_headers.get(b"content-length", b"0"))
        return status, await self._reader.readexactly(length)

    async def open_stream(self, path: str, headers: dict[str, str] | None = None) -> int:
        """Start a GET whose body is read with `read_frame`; returns the status."""
        self._send_head("GET", path, {"Accept": "text/event-stream", **(headers or {})}, b"")
        status, _ = await self._read_head()
        return status

    async def read_frame(self, event: bytes) -> bytes:
        """Read the streamed SSE body until a whole frame of type `event`; return it."""
        marker = b"event: " + event + b"\r\n"
        seen = b""
        while True:
            at = seen.find(marker)
            if at >= 0:
                end = seen.find(b"\r\n\r\n", at)
                if end >= 0:
                    return seen[at:end]
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError(f"stream ended before a {event!r} frame")
            seen += data

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def sessiond_turn(
    host: str,
    port: int,
    poster: LeanConnection,
    session_id: str,
    body: bytes,
    headers: dict[str, str],
) -> bytes:
    """One sessiond turn: open the session's stream on a new connection, post `body` (the
    events) on `poster`, and read to the `session.status_idle` frame, which is returned."""
    stream = await LeanConnection.open(host, port)
    try:
        if await stream.open_stream(f"/v1/sessions/{session_id}/events/stream", headers) != 200:
            raise RuntimeError("sessiond stream: not 200")
        path = f"/v1/sessions/{session_id}/events"
        status, _ = await poster.request("POST", path, body, headers)
        if status != 200:
            raise RuntimeError(f"sessiond send: HTTP {status}")
        return await stream.read_frame(b"session.status_idle")
    finally:
        await stream.close()
