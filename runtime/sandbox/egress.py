"""The egress proxy: the only way out of a sandbox with `limited` networking.

Such a sandbox has a network namespace of its own with loopback only. Its tools get
`HTTP_PROXY=http://127.0.0.1:<port>`, which forwarder.py (inside the sandbox) relays to this
proxy's Unix socket. Every destination is checked twice: the name against the environment's
`allowed_hosts` (and the server's `extra_hosts`), then EVERY address it resolves to against
the forbidden ranges (loopback, private, link-local, ...), and the proxy connects to an
address it checked, never resolving again. Both checks are needed: a tenant can list
`localhost:5432` to reach the host's PostgreSQL, and a public name can resolve to 127.0.0.1
(DNS rebinding). Only the operator's `allow_private` opens a forbidden address.

Deliberate choices:
1. A name is checked before it is resolved, so an unlisted name never reaches DNS.
2. A tunnel ends when the destination closes. The client closing only half-closes toward the
   destination, so a client that shuts down its sending side still gets the whole response.
3. Plain HTTP is forwarded with `Connection: close`: one destination per client connection.
4. Requests are never logged beyond host, port and reason: headers and bodies hold credentials.
"""

from __future__ import annotations

import asyncio
import collections
import http
import ipaddress
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import msgspec

log = logging.getLogger("sessiond.egress")

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_LINES = 100
_HEAD_TIMEOUT_S = 30.0
_LINGER_S = 2.0
_CHUNK = 64 * 1024
_RECENT_REFUSALS = 100
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/1\.[01])")
_DROPPED = frozenset(
    {"host", "connection", "keep-alive", "proxy-connection", "proxy-authorization"}
)
_SHARED_SPACE = ipaddress.IPv4Network("100.64.0.0/10")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class EgressPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Where a sandbox's tools may connect through the proxy."""

    allowed_hosts: tuple[str, ...]
    """The environment's patterns: `example.com`, `*.example.com` (subdomains only), an IP, or
    `*` (any host), each with an optional `:port` (without one, any port)."""
    extra_hosts: tuple[str, ...] = ()
    """Hosts the server adds (package registries), in the same syntax."""
    allow_private: tuple[str, ...] = ()
    """The operator's exceptions to the forbidden ranges: `IP`, `IP:port` or a CIDR network."""


class EgressRefused(msgspec.Struct, frozen=True, kw_only=True):
    """A destination the proxy refused (kept for logs and tests)."""

    host: str
    port: int
    reason: str


class _Request(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    upstream_head: bytes
    """What the destination gets first: a plain request's rewritten head, or b"" for CONNECT."""


class _Failed(msgspec.Struct, frozen=True):
    status: int
    reason: str


def destination_allowed(policy: EgressPolicy, host: str, port: int) -> str | None:
    """None when `host:port` matches allowed_hosts or extra_hosts, else why not."""
    name = _normal_host(host)
    name_listed = False
    for pattern in (*policy.allowed_hosts, *policy.extra_hosts):
        parsed = _split_host_port(pattern.strip())
        if parsed is None or not _host_matches(_normal_host(parsed[0]), name):
            continue
        if parsed[1] is None or parsed[1] == port:
            return None
        name_listed = True
    if name_listed:
        return f'port {port} of host "{host}" is not in this environment\'s allowed_hosts'
    return f'host "{host}" is not in this environment\'s allowed_hosts'


def address_allowed(policy: EgressPolicy, ip: str, port: int) -> str | None:
    """None when the proxy may connect to `ip:port`, else why not.

    The reason is a phrase that follows "resolves to": `127.0.0.1, a loopback address, ...`.
    """
    try:
        address: _Address = ipaddress.ip_address(ip)
    except ValueError:
        return f"{ip!r} is not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(_private_entry_matches(entry, address, port) for entry in policy.allow_private):
        return None
    kind = _forbidden_kind(address)
    if kind is None:
        return None
    return f"{ip}, {kind}, which only the operator's allow_private can open"


class EgressProxy:
    """An HTTP proxy on a Unix socket that lets a sandbox reach only its policy's hosts."""

    def __init__(
        self,
        socket_path: Path,
        policy: EgressPolicy,
        *,
        connect_timeout_s: float = 10,
        idle_timeout_s: float = 300,
        max_connections: int = 64,
    ) -> None:
        self.socket_path = socket_path
        self.policy = policy
        self.denied: collections.deque[EgressRefused] = collections.deque(maxlen=_RECENT_REFUSALS)
        """The most recent refusals, newest last."""
        self.denied_total = 0
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[object], anyio.CancelScope] = {}

    async def start(self) -> None:
        """Listen on the socket, which the sandbox's other uid must be able to connect to."""
        self._server = await asyncio.start_unix_server(self._serve, path=self.socket_path)
        os.chmod(self.socket_path, 0o666)

    async def close(self) -> None:
        """Stop listening, end every open tunnel and remove the socket file."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for scope in self._clients.values():
            scope.cancel()
        if self._clients:
            await asyncio.wait(set(self._clients))
        if server is not None:
            await server.wait_closed()
        self.socket_path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        # close() cancels this scope, not the task: the task then ends normally, which is
        # what asyncio's stream server expects of it.
        with anyio.CancelScope() as scope:
            self._clients[task] = scope
            try:
                if self._server is None:
                    return
                failed: _Failed | None = None
                if len(self._clients) > self._max_connections:
                    failed = _Failed(503, "too many connections through this sandbox's proxy")
                else:
                    failed = await self._relay(reader, writer)
                if failed is not None:
                    await _respond((reader, writer), failed)
            except OSError as exc:
                log.debug("egress client connection failed: %s", exc)
            except Exception:
                log.exception("egress client connection failed")
            finally:
                del self._clients[task]
                writer.close()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Failed | None:
        """Serve one request; None when done, else what to tell the client."""
        try:
            with anyio.fail_after(_HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return _Failed(400, "no complete request head of at most 16 KiB in time")
        request = _parse_head(head)
        if isinstance(request, str):
            return _Failed(400, request)
        opened = await self._open(request.host, request.port)
        if isinstance(opened, _Failed):
            if opened.status == 403:
                self.denied_total += 1
                self.denied.append(
                    EgressRefused(host=request.host, port=request.port, reason=opened.reason)
                )
                log.info(
                    "egress to %r port %d refused: %s", request.host, request.port, opened.reason
                )
            return opened
        try:
            if request.upstream_head:
                opened[1].write(request.upstream_head)
            else:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._pipe((reader, writer), opened)
        finally:
            opened[1].close()
        return None

    async def _open(self, host: str, port: int) -> _Streams | _Failed:
        """Check, resolve, check every address, and connect to a checked one."""
        reason = destination_allowed(self.policy, host, port)
        if reason is not None:
            return _Failed(403, reason)
        loop = asyncio.get_running_loop()
        last_error = "it resolves to no address"
        try:
            with anyio.fail_after(self._connect_timeout_s):
                infos = await loop.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
                for *_, sockaddr in infos:
                    why = address_allowed(self.policy, str(sockaddr[0]), port)
                    if why is not None:
                        return _Failed(403, f'host "{host}" resolves to {why}')
                for family, kind, proto, _, sockaddr in infos:
                    sock = socket.socket(family, kind, proto)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, sockaddr)
                        return await asyncio.open_connection(sock=sock)
                    except OSError as exc:
                        sock.close()
                        last_error = f"{sockaddr[0]}: {exc.strerror or exc}"
                    except BaseException:
                        sock.close()
                        raise
        except TimeoutError:
            return _Failed(504, f'host "{host}" port {port}: no connection within the timeout')
        except socket.gaierror as exc:
            return _Failed(502, f'cannot resolve host "{host}": {exc.strerror}')
        return _Failed(502, f'cannot connect to host "{host}" port {port}: {last_error}')

    async def _pipe(self, client: _Streams, upstream: _Streams) -> None:
        """Copy both ways until the destination closes, an error, or idle_timeout_s of silence."""
        idle_s = self._idle_timeout_s
        with anyio.move_on_after(idle_s) as idle:
            async with anyio.create_task_group() as tg:

                async def copy(
                    source: asyncio.StreamReader, sink: asyncio.StreamWriter, ends: bool
                ) -> None:
                    try:
                        while data := await source.read(_CHUNK):
                            idle.deadline = anyio.current_time() + idle_s
                            sink.write(data)
                            await sink.drain()
                        if not ends and sink.can_write_eof():
                            sink.write_eof()
                            return
                    except OSError:
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(copy, client[0], upstream[1], False)
                tg.start_soon(copy, upstream[0], client[1], True)


async def _respond(client: _Streams, failed: _Failed) -> None:
    """Answer with an error, then read what the client still sends, for a moment: closing a
    socket (a Unix one too) with unread bytes resets it, and the client would lose the answer."""
    reader, writer = client
    body = f"sessiond egress proxy: {failed.reason}\n".encode()
    head = (
        f"HTTP/1.1 {failed.status} {http.HTTPStatus(failed.status).phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    if writer.can_write_eof():
        writer.write_eof()
    with anyio.move_on_after(_LINGER_S):
        while await reader.read(_CHUNK):
            pass


def _parse_head(head: bytes) -> _Request | str:
    """The request, or why it is not one this proxy serves."""
    if len(head) > MAX_HEAD_BYTES:
        return "request head over 16 KiB"
    request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    if len(lines) > MAX_HEADER_LINES:
        return f"more than {MAX_HEADER_LINES} header lines"
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        return "malformed request line"
    method, target, version = match.groups()
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            return "malformed header line"
        headers.append((name, value.strip()))
    if method == "CONNECT":
        parsed = _split_host_port(target)
        if parsed is None or parsed[1] is None or not parsed[0]:
            return "CONNECT needs host:port"
        return _Request(host=parsed[0].strip("[]"), port=parsed[1], upstream_head=b"")
    try:
        url = urlsplit(target)
        port = 80 if url.port is None else url.port
    except ValueError:
        return "malformed URI"
    if url.scheme.lower() != "http" or not url.hostname or not 1 <= port <= 65535:
        return "only CONNECT and absolute http:// URIs are proxied"
    # The destination sees origin-form, a Host from the URI (RFC 9112 3.2.2), no hop-by-hop.
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    lines = [f"{method} {url.path or '/'}{'?' if url.query else ''}{url.query} {version}"]
    lines.append(f"Host: {host}" if port == 80 else f"Host: {host}:{port}")
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in _DROPPED]
    lines.append("Connection: close")
    upstream_head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return _Request(host=url.hostname, port=port, upstream_head=upstream_head)


def _split_host_port(text: str) -> tuple[str, int | None] | None:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal; None when malformed."""
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        host, port_text = f"[{inside}]", rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        return text, None
    if not port_text:
        return None if text.endswith(":") else (host, None)
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        return None
    return host, int(port_text)


def _normal_host(host: str) -> str:
    host = host.strip().lower().removesuffix(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _as_ip(text: str) -> _Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _host_matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and _as_ip(name) is None
    pattern_ip, name_ip = _as_ip(pattern), _as_ip(name)
    if pattern_ip is not None or name_ip is not None:
        return pattern_ip == name_ip
    return pattern == name


def _private_entry_matches(entry: str, address: _Address, port: int) -> bool:
    entry = entry.strip()
    if "/" in entry:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
        return address.version == network.version and address in network
    parsed = _split_host_port(entry)
    if parsed is None or (parsed[1] is not None and parsed[1] != port):
        return False
    return _as_ip(_normal_host(parsed[0])) == address


def _forbidden_kind(address: _Address) -> str | None:
    """What makes the address forbidden, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        # A 6to4 address leads to the IPv4 address inside it. (NAT64's 64:ff9b::/96 is
        # reserved, so refused whatever it embeds.)
        kind = _forbidden_kind(address.sixtofour)
        if kind is not None:
            return f"{kind} inside a 6to4 address"
    shared = address.version == 4 and address in _SHARED_SPACE
    for kind, hit in (
        ("an unspecified address", address.is_unspecified),
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("in the shared address space 100.64.0.0/10", shared),
        ("a reserved address", address.is_reserved),
        ("a private address", address.is_private),
    ):
        if hit:
            return kind
    return None if address.is_global else "not a globally routable address"
