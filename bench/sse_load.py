"""The SSE load process: N raw-socket clients tail S streams while one task appends.

Each appended event carries `T=<unix time>;` in its text; a client that receives it
records `now - T` (both processes read the same wall clock). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from urllib.parse import urlparse

import httpx

MARK = re.compile(rb"T=(\d+\.\d+);")


async def client(
    host: str, port: int, path: str, key: str, stats: dict, ready: asyncio.Event, total: int
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    stats["connected"] += 1
    if stats["connected"] == total:
        ready.set()
    tail = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = time.time()
            tail += data
            cut = tail.rfind(b"\r\n\r\n")
            if cut < 0:
                continue
            complete, tail = tail[: cut + 4], tail[cut + 4 :]
            for found in MARK.finditer(complete):
                stats["received"] += 1
                if stats["measuring"]:
                    stats["latencies"].append(now - float(found.group(1)))
    finally:
        writer.close()


async def appender(
    url: str,
    mode: str,
    streams: list[str],
    key: str,
    rate: float,
    seconds: float,
    posters: int = 1,
) -> int:
    """`rate` appends per second, spread over `posters` concurrent posting loops (one
    loop's round trips cap it near 500/s)."""
    counts = await asyncio.gather(
        *(
            _post_loop(
                url,
                mode,
                streams[i::posters] or streams,
                key,
                rate / posters,
                seconds,
                # Staggered: loops started together would post in bursts of `posters`.
                offset=i / rate,
            )
            for i in range(posters)
        )
    )
    return sum(counts)


async def _post_loop(
    url: str,
    mode: str,
    streams: list[str],
    key: str,
    rate: float,
    seconds: float,
    offset: float = 0.0,
) -> int:
    sent = 0
    interval = 1.0 / rate
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=30) as http:
        await asyncio.sleep(offset)
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            stream = streams[sent % len(streams)]
            text = f"T={time.time():.6f}; " + "p" * 300
            if mode == "sessiond":
                body = {
                    "events": [
                        {"type": "user.message", "content": [{"type": "text", "text": text}]}
                    ]
                }
                response = await http.post(f"/v1/sessions/{stream}/events", json=body)
            else:
                response = await http.post(
                    f"/publish/{stream}",
                    content=json.dumps(
                        {"type": "user.message", "content": [{"type": "text", "text": text}]}
                    ),
                )
            response.raise_for_status()
            sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return sent


async def main(args: argparse.Namespace) -> None:
    if args.post_only:
        streams = args.streams.split(",")
        sent = await appender(
            args.url, args.mode, streams, args.key, args.rate, args.seconds, args.posters
        )
        print(sent, flush=True)
        return
    client_urls = [urlparse(u) for u in (args.client_urls or args.url).split(",")]
    streams = args.streams.split(",")
    stats = {"connected": 0, "received": 0, "latencies": [], "measuring": False}
    ready = asyncio.Event()
    template = "/v1/sessions/{}/events/stream" if args.mode == "sessiond" else "/stream/{}"
    tasks = []
    for index in range(args.clients):
        path = template.format(streams[index % len(streams)])
        parsed = client_urls[index % len(client_urls)]
        tasks.append(
            asyncio.create_task(
                client(parsed.hostname, parsed.port, path, args.key, stats, ready, args.clients)
            )
        )
        if index % 50 == 49:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(ready.wait(), timeout=60)
    await asyncio.sleep(0.5)
    stats["measuring"] = True
    before = stats["received"]
    started = time.monotonic()
    if args.posters > 1:
        # Many posters get a process of their own: sharing this one with the clients'
        # reads, their POSTs were delayed by it and that delay counted as latency.
        poster = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sse_load",
            "--post-only",
            *(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "post_only"),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await poster.communicate()
        sent = int(out.decode().strip().splitlines()[-1])
    else:
        sent = await appender(
            args.url, args.mode, streams, args.key, args.rate, args.seconds, args.posters
        )
    await asyncio.sleep(1.0)  # let the last frames arrive
    elapsed = time.monotonic() - started
    received = stats["received"] - before
    expected = sent * args.clients // len(streams)
    lat = sorted(stats["latencies"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * q / 100))] * 1000 if lat else float("nan")

    print(
        json.dumps(
            {
                "sent": sent,
                "received": received,
                "expected": expected,
                "delivered_per_s": received / elapsed,
                "p50_ms": pct(50),
                "p99_ms": pct(99),
            }
        ),
        flush=True,
    )
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--mode", choices=["sessiond", "bare"])
    parser.add_argument("--streams")
    parser.add_argument("--key", default="")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--posters", type=int, default=1, help="concurrent posting loops")
    parser.add_argument(
        "--client-urls", default="", help="comma-separated servers the clients spread over"
    )
    parser.add_argument("--post-only", action="store_true", help="(internal) only post")
    asyncio.run(main(parser.parse_args()))
