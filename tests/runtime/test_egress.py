"""The egress proxy and the sandbox's forwarder, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

from sessiond.runtime.sandbox import forwarder
from sessiond.runtime.sandbox.egress import (
    EgressPolicy,
    EgressProxy,
    address_allowed,
    destination_allowed,
)

pytestmark = pytest.mark.anyio

BODY = b"hello from the origin"
FORWARDER = forwarder.__file__


class Origin(msgspec.Struct):
    port: int
    heads: list[bytes]
    """The request heads it received, in order."""


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A short path: a Unix socket's path holds at most 107 bytes, and tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="egress-") as directory:
        yield Path(directory) / "proxy.sock"


@asynccontextmanager
async def _origin() -> AsyncIterator[Origin]:
    """An HTTP server on 127.0.0.1 that answers every request with BODY."""
    origin = Origin(port=0, heads=[])

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            origin.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
            await writer.drain()
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def _proxy(
    path: Path, policy: EgressPolicy, *, idle_timeout_s: float = 300, max_connections: int = 64
) -> AsyncIterator[EgressProxy]:
    proxy = EgressProxy(
        path,
        policy,
        connect_timeout_s=1,
        idle_timeout_s=idle_timeout_s,
        max_connections=max_connections,
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def _reachable(port: int) -> EgressPolicy:
    """A policy that lists the loopback origin and has the operator open it."""
    return EgressPolicy(allowed_hosts=(f"127.0.0.1:{port}",), allow_private=(f"127.0.0.1:{port}",))


async def _ask(path: Path, request: bytes) -> bytes:
    """Send one request, shut the sending half (the proxy must still answer), read to the end."""
    with anyio.fail_after(1.5):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(request)
            writer.write_eof()
            return await reader.read()
        finally:
            writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_connect_tunnel_reaches_an_origin_the_operator_opened(socket_path: Path) -> None:
    async with _origin() as origin, _proxy(socket_path, _reachable(origin.port)) as proxy:
        assert socket_path.stat().st_mode & 0o777 == 0o666
        with anyio.fail_after(1.5):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            writer.write(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
            assert await reader.readuntil(b"\r\n\r\n") == (
                b"HTTP/1.1 200 Connection established\r\n\r\n"
            )
            writer.write(b"GET /through HTTP/1.1\r\nHost: origin\r\n\r\n")
            answer = await reader.read()
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(BODY)
    assert origin.heads == [b"GET /through HTTP/1.1\r\nHost: origin\r\n\r\n"]
    assert not proxy.denied and not socket_path.exists()


async def test_an_absolute_form_request_is_rewritten_for_the_origin(socket_path: Path) -> None:
    async with _origin() as origin, _proxy(socket_path, _reachable(origin.port)):
        request = (
            f"POST http://127.0.0.1:{origin.port}/a/b?c=1 HTTP/1.1\r\n"
            "Host: spoofed.example\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
            "Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nX-Kept: yes\r\n\r\n"
        )
        answer = await _ask(socket_path, request.encode())
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(BODY)
    assert origin.heads == [
        f"POST /a/b?c=1 HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\nX-Kept: yes\r\n"
        "Connection: close\r\n\r\n".encode()
    ]


async def test_a_listed_loopback_origin_still_needs_the_operator(socket_path: Path) -> None:
    policy = EgressPolicy(allowed_hosts=("127.0.0.1",))
    async with _origin() as origin, _proxy(socket_path, policy) as proxy:
        answer = await _ask(
            socket_path, f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode()
        )
        plain = await _ask(
            socket_path, f"GET http://127.0.0.1:{origin.port}/ HTTP/1.1\r\n\r\n".encode()
        )
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b'host "127.0.0.1" resolves to 127.0.0.1, a loopback address' in answer
    assert plain.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"loopback" in plain
    assert origin.heads == []
    assert [(r.host, r.port) for r in proxy.denied] == [("127.0.0.1", origin.port)] * 2
    assert proxy.denied_total == 2


async def test_unlisted_hosts_and_listed_localhost_are_refused(socket_path: Path) -> None:
    policy = EgressPolicy(allowed_hosts=("localhost:5432", "example.com"))
    async with _proxy(socket_path, policy):
        unlisted = await _ask(socket_path, b"CONNECT example.invalid:443 HTTP/1.1\r\n\r\n")
        localhost = await _ask(socket_path, b"CONNECT localhost:5432 HTTP/1.1\r\n\r\n")
    assert unlisted.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert unlisted.endswith(
        b'sessiond egress proxy: host "example.invalid" is not in this environment\'s'
        b" allowed_hosts\n"
    )
    assert localhost.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b'host "localhost" resolves to' in localhost and b"a loopback address" in localhost


@pytest.mark.parametrize(
    ("patterns", "host", "port", "allowed"),
    [
        (("example.com",), "example.com", 443, True),
        (("example.com",), "EXAMPLE.com.", 80, True),
        (("Example.COM.",), "example.com", 80, True),
        (("example.com",), "api.example.com", 443, False),
        (("example.com",), "example.com.evil.net", 443, False),
        (("*.example.com",), "api.example.com", 443, True),
        (("*.example.com",), "a.b.example.com", 443, True),
        (("*.example.com",), "example.com", 443, False),
        (("*.example.com",), "badexample.com", 443, False),
        (("example.com:443",), "example.com", 443, True),
        (("example.com:443",), "example.com", 80, False),
        (("93.184.216.34",), "93.184.216.34", 8080, True),
        (("[2001:db8::1]:443",), "2001:DB8:0::1", 443, True),
        (("2001:db8::1",), "[2001:db8::1]", 22, True),
        (("*.example.com",), "10.0.0.1", 443, False),
        (("*",), "anything.example", 443, True),
        (("not a:port",), "not a", 1, False),
    ],
)
def test_destination_patterns(
    patterns: tuple[str, ...], host: str, port: int, allowed: bool
) -> None:
    reason = destination_allowed(EgressPolicy(allowed_hosts=patterns), host, port)
    assert (reason is None) == allowed, reason


def test_destination_reasons_name_the_host_and_extra_hosts_count() -> None:
    policy = EgressPolicy(allowed_hosts=("example.com:443",), extra_hosts=("pypi.org",))
    assert destination_allowed(policy, "pypi.org", 443) is None
    assert destination_allowed(policy, "evil.example", 443) == (
        'host "evil.example" is not in this environment\'s allowed_hosts'
    )
    assert "port 80" in (destination_allowed(policy, "example.com", 80) or "")


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "shared address space"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("fc00::1", "private"),
        ("2002:7f00:1::1", "loopback"),
        ("not-an-ip", "not an IP address"),
    ],
)
def test_forbidden_addresses(ip: str, kind: str) -> None:
    reason = address_allowed(EgressPolicy(allowed_hosts=()), ip, 443)
    assert reason is not None and kind in reason


def test_public_addresses_and_the_operators_exceptions() -> None:
    nothing = EgressPolicy(allowed_hosts=())
    assert address_allowed(nothing, "93.184.216.34", 443) is None
    assert address_allowed(nothing, "2606:2800:220:1:248:1893:25c8:1946", 443) is None
    operator = EgressPolicy(
        allowed_hosts=(), allow_private=("10.0.0.0/8", "127.0.0.1:5432", "[::1]:8080")
    )
    assert address_allowed(operator, "10.200.3.4", 1) is None
    assert address_allowed(operator, "::ffff:10.0.0.1", 1) is None
    assert address_allowed(operator, "127.0.0.1", 5432) is None
    assert address_allowed(operator, "127.0.0.1", 5433) is not None
    assert address_allowed(operator, "::1", 8080) is None
    assert address_allowed(operator, "192.168.0.1", 1) is not None


@pytest.mark.parametrize(
    "request_head",
    [
        pytest.param(b"hello\r\n\r\n", id="no-request-line"),
        pytest.param(b"GET /relative HTTP/1.1\r\nHost: example.com\r\n\r\n", id="origin-form"),
        pytest.param(b"GET https://example.com/ HTTP/1.1\r\n\r\n", id="https-uri"),
        pytest.param(b"CONNECT example.com HTTP/1.1\r\n\r\n", id="connect-without-port"),
        pytest.param(b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n", id="port-out-of-range"),
        pytest.param(b"GET http://example.com/ HTTP/1.1\r\nno colon\r\n\r\n", id="bad-header"),
        pytest.param(
            b"GET http://example.com/ HTTP/1.1\r\nX-Big: " + b"a" * 17_000 + b"\r\n\r\n",
            id="head-over-16KiB",
        ),
        pytest.param(
            b"GET http://example.com/ HTTP/1.1\r\nX-Huge: " + b"a" * 70_000 + b"\r\n\r\n",
            id="head-over-the-read-limit",
        ),
        pytest.param(
            b"GET http://example.com/ HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
            id="101-header-lines",
        ),
        pytest.param(b"GET http://example.com/", id="closed-before-the-head-ends"),
    ],
)
async def test_malformed_requests_get_400(socket_path: Path, request_head: bytes) -> None:
    async with _proxy(socket_path, EgressPolicy(allowed_hosts=("*",))) as proxy:
        answer = await _ask(socket_path, request_head)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    assert not proxy.denied


async def test_a_closed_allowed_port_gets_502(socket_path: Path) -> None:
    port = _free_port()
    async with _proxy(socket_path, _reachable(port)):
        answer = await _ask(socket_path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"cannot connect" in answer


async def test_past_max_connections_clients_get_503(socket_path: Path) -> None:
    async with (
        _origin() as origin,
        _proxy(socket_path, _reachable(origin.port), max_connections=1),
    ):
        with anyio.fail_after(1.5):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            writer.write(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            second = await _ask(socket_path, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
            writer.close()
    assert second.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


async def test_idle_tunnels_and_close_end_open_tunnels(socket_path: Path) -> None:
    async with _origin() as origin:
        async with _proxy(socket_path, _reachable(origin.port), idle_timeout_s=0.2):
            idle = await _open_tunnel(socket_path, origin.port)
            with anyio.fail_after(1):
                assert await idle[0].read() == b""  # the origin waits for a request forever
            idle[1].close()
        proxy = EgressProxy(socket_path, _reachable(origin.port))
        await proxy.start()
        busy = await _open_tunnel(socket_path, origin.port)
        await proxy.close()
        with anyio.fail_after(1):
            assert await busy[0].read() == b""
        busy[1].close()
    assert not socket_path.exists()


async def test_traffic_keeps_a_tunnel_open_past_the_idle_timeout(socket_path: Path) -> None:
    async with (
        _origin() as origin,
        _proxy(socket_path, _reachable(origin.port), idle_timeout_s=0.3),
    ):
        reader, writer = await _open_tunnel(socket_path, origin.port)
        # Time is what this tests: the request takes 0.36 s to arrive, never idle for 0.3 s.
        for gap, part in enumerate((b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"X: 1\r\n", b"\r\n")):
            await anyio.sleep(0.12 if gap else 0)
            writer.write(part)
        with anyio.fail_after(1):
            answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(BODY)


async def _open_tunnel(path: Path, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    with anyio.fail_after(1):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    return reader, writer


def _forwarder(proxy_socket: Path, port: int, *child: str) -> list[str]:
    """The sandbox's command line: the forwarder without site-packages, then the child."""
    return [sys.executable, "-I", "-S", FORWARDER, str(proxy_socket), str(port), "--", *child]


def _proxied_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proxy = f"http://127.0.0.1:{port}"
    return env | {"HTTP_PROXY": proxy, "http_proxy": proxy}


async def test_the_forwarder_carries_a_tools_request_to_the_proxy(socket_path: Path) -> None:
    port = _free_port()
    async with _origin() as origin, _proxy(socket_path, _reachable(origin.port)):
        fetch = (
            "import urllib.request; "
            f"print(urllib.request.urlopen('http://127.0.0.1:{origin.port}/', timeout=2)"
            ".read().decode())"
        )
        with anyio.fail_after(5):
            done = await anyio.run_process(
                _forwarder(socket_path, port, sys.executable, "-I", "-S", "-c", fetch),
                env=_proxied_env(port),
                check=False,
            )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == BODY.decode()
    assert origin.heads[0].startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:")


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [("raise SystemExit(3)", 3), ("import os; os.kill(os.getpid(), 9)", 128 + 9)],
)
async def test_the_forwarder_exits_with_the_childs_code(
    socket_path: Path, code: str, exit_code: int
) -> None:
    with anyio.fail_after(5):
        done = await anyio.run_process(
            _forwarder(socket_path, _free_port(), sys.executable, "-I", "-S", "-c", code),
            check=False,
        )
    assert done.returncode == exit_code, done.stderr.decode()


async def test_the_forwarder_exits_when_the_child_does_with_a_tunnel_open(
    socket_path: Path,
) -> None:
    port = _free_port()
    wait = "import sys; print('ready', flush=True); sys.stdin.readline()"
    async with _origin() as origin, _proxy(socket_path, _reachable(origin.port)):
        command = _forwarder(socket_path, port, sys.executable, "-I", "-S", "-c", wait)
        # The deadline covers the process's close too, which kills a forwarder that hangs.
        with anyio.fail_after(2):
            async with await anyio.open_process(command, stderr=subprocess.DEVNULL) as process:
                assert process.stdin is not None and process.stdout is not None
                assert (await process.stdout.receive()).startswith(b"ready")
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n\r\n".encode())
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
                await process.stdin.send(b"go\n")
                assert await process.wait() == 0
                assert await reader.read() == b""
                writer.close()
