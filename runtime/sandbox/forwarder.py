"""Inside a `limited` sandbox: TCP 127.0.0.1:PORT relayed to the egress proxy's Unix socket.

Usage: `forwarder.py SOCKET_PATH PORT -- ARGV...`. The sandbox has loopback only; its tools
get `HTTP_PROXY=http://127.0.0.1:PORT`, and this script relays each such connection, byte for
byte, to a new connection on SOCKET_PATH, where the egress proxy (runtime/sandbox/egress.py)
listens. It listens before it starts ARGV, so the command can never connect too early, and it
exits with ARGV's exit code (128+N for signal N) as soon as ARGV ends, open tunnels or not.

It runs as `/usr/bin/python3 -I -S forwarder.py ...`, where sessiond is not importable:
standard library only. One thread and a selector, since threads count against the sandbox's
RLIMIT_NPROC; a pidfd in the same selector reports the child's exit. SIGTERM and SIGHUP are
passed on to the child; SIGINT is ignored, as the child shares our process group and gets
it itself.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
from types import FrameType

_CHUNK = 64 * 1024
_CONNECT_TIMEOUT_S = 5.0
_USAGE = "usage: forwarder.py SOCKET_PATH PORT -- ARGV..."


class _Tunnel:
    """One accepted TCP connection and its Unix-socket twin, copied both ways.

    A side's EOF becomes a shutdown of the other side's sending half once everything read
    before it is written; the tunnel closes when both halves are shut, or at any error.
    """

    def __init__(
        self, selector: selectors.BaseSelector, client: socket.socket, upstream: socket.socket
    ) -> None:
        self._selector = selector
        self._peer = {client: upstream, upstream: client}
        self._outgoing = {client: b"", upstream: b""}  # read, waiting to be sent TO the key
        self._ended: set[socket.socket] = set()  # sent us EOF
        self._shut: set[socket.socket] = set()  # we shut down their sending half
        self._closed = False
        self._watch()

    def handle(self, sock: socket.socket, events: int) -> None:
        """Move what the selector says can move."""
        if self._closed:
            return
        try:
            if events & selectors.EVENT_WRITE:
                self._flush(sock)
            if events & selectors.EVENT_READ:
                self._read(sock)
        except OSError:
            self.close()
            return
        if len(self._shut) == 2:
            self.close()
        else:
            self._watch()

    def close(self) -> None:
        """Close both sockets (again is fine)."""
        self._closed = True
        for sock in self._peer:
            if sock.fileno() >= 0 and self._selector.get_map().get(sock) is not None:
                self._selector.unregister(sock)
            sock.close()

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        peer = self._peer[sock]
        if data:
            self._outgoing[peer] += data
        else:
            self._ended.add(sock)
        self._flush(peer)

    def _flush(self, sock: socket.socket) -> None:
        pending = self._outgoing[sock]
        if pending:
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                sent = 0
            self._outgoing[sock] = pending[sent:]
        done = not self._outgoing[sock] and self._peer[sock] in self._ended
        if done and sock not in self._shut:
            sock.shutdown(socket.SHUT_WR)
            self._shut.add(sock)

    def _watch(self) -> None:
        """Read a side only while its last bytes are delivered; write a side while some wait."""
        for sock, peer in self._peer.items():
            mask = 0
            if sock not in self._ended and not self._outgoing[peer]:
                mask |= selectors.EVENT_READ
            if self._outgoing[sock]:
                mask |= selectors.EVENT_WRITE
            key = self._selector.get_map().get(sock)
            if key is None and mask:
                self._selector.register(sock, mask, self.handle)
            elif key is not None and not mask:
                self._selector.unregister(sock)
            elif key is not None and key.events != mask:
                self._selector.modify(sock, mask, self.handle)


def main(argv: list[str]) -> int:
    """Listen, start the command, relay until it exits; return its exit code."""
    if len(argv) < 4 or argv[2] != "--" or not argv[1].isdigit():
        print(_USAGE, file=sys.stderr)
        return 2
    socket_path, port, command = argv[0], int(argv[1]), argv[3:]
    try:
        listener = socket.create_server(("127.0.0.1", port), backlog=128)
    except OSError as exc:
        print(f"forwarder: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    listener.setblocking(False)
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"forwarder: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGHUP, pass_on)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # set after exec: the child keeps SIGINT

    def accept(_listener: socket.socket, _events: int) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.settimeout(_CONNECT_TIMEOUT_S)
            upstream.connect(socket_path)
        except OSError:
            client.close()
            upstream.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        _Tunnel(selector, client, upstream)

    pidfd = os.pidfd_open(child.pid)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, accept)
    selector.register(pidfd, selectors.EVENT_READ, None)
    while True:
        for key, events in selector.select():
            if key.data is None:
                code = child.wait()
                return 128 - code if code < 0 else code
            key.data(key.fileobj, events)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
