"""The egress proxies sandboxes reach out through: one per environment (and policy), shared
by that environment's sessions only, each on a Unix socket of its own. One tenant holding
a proxy's connections cannot starve another's, and proxies unused for `IDLE_S` are closed.

`limited` networking admits the environment's `allowed_hosts`, plus the package
registries when `allow_package_managers` is set (and MCP servers never connect yet, so
`allow_mcp_servers` opens nothing). Without slirp4netns, `unrestricted` sandboxes get the
`public` proxy: any host, still never a loopback, private or link-local address. The
operator's `SESSIOND_EGRESS_ALLOW_PRIVATE` opens chosen internal destinations to both.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from sessiond.runtime.resources.environments import Limited
from sessiond.runtime.sandbox.egress import EgressPolicy, EgressProxy

PACKAGE_REGISTRIES = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
)


def registry_hosts() -> tuple[str, ...]:
    """The public registries and the operator's own index hosts (`PIP_INDEX_URL`,
    `PIP_EXTRA_INDEX_URL`, `NPM_CONFIG_REGISTRY`)."""
    hosts = list(PACKAGE_REGISTRIES)
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "NPM_CONFIG_REGISTRY"):
        for url in os.environ.get(name, "").split():
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.hostname:
                hosts.append(f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname)
    return tuple(hosts)


IDLE_S = 1800.0
"""A proxy no tool call asked for in this long is closed (longer than any tool runs)."""

_Key = tuple[str, EgressPolicy]


class EgressProxies:
    """The running proxies of this process, started on first use."""

    def __init__(self, allow_private: tuple[str, ...] = ()) -> None:
        self._allow_private = allow_private
        self._dir: Path | None = None
        self._proxies: dict[_Key, EgressProxy] = {}
        self._sockets: dict[_Key, Path] = {}
        self._used: dict[_Key, float] = {}
        self._starting = asyncio.Lock()

    async def limited(self, environment_id: str, networking: Limited) -> Path:
        """The socket of the proxy for a `limited` environment."""
        extra = registry_hosts() if networking.allow_package_managers else ()
        policy = EgressPolicy(
            allowed_hosts=tuple(networking.allowed_hosts),
            extra_hosts=extra,
            allow_private=self._allow_private,
        )
        return await self._socket((environment_id, policy))

    async def public(self, environment_id: str) -> Path:
        """The socket of the proxy that admits any public host."""
        policy = EgressPolicy(allowed_hosts=("*",), allow_private=self._allow_private)
        return await self._socket((environment_id, policy))

    async def _socket(self, key: _Key) -> Path:
        now = time.monotonic()
        self._used[key] = now
        socket = self._sockets.get(key)
        if socket is not None:
            return socket
        async with self._starting:
            await self._close_idle(now)
            return self._sockets.get(key) or await self._start(key)

    async def _close_idle(self, now: float) -> None:
        for key in [k for k, used in self._used.items() if now - used > IDLE_S]:
            proxy = self._proxies.pop(key, None)
            self._sockets.pop(key, None)
            self._used.pop(key, None)
            if proxy is not None:
                await proxy.close()

    async def _start(self, key: _Key) -> Path:
        if self._dir is None:
            # Short: a Unix socket's path holds at most 107 bytes.
            self._dir = Path(tempfile.mkdtemp(prefix="sessiond-egress-"))
        name = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        socket = self._dir / f"{name}.sock"
        proxy = EgressProxy(socket, key[1])
        await proxy.start()
        self._proxies[key] = proxy
        self._sockets[key] = socket
        return socket

    def refusals(self) -> int:
        """How many connections the proxies refused (tests and logs)."""
        return sum(p.denied_total for p in self._proxies.values())

    async def close(self) -> None:
        """Stop every proxy and remove their sockets."""
        for proxy in self._proxies.values():
            await proxy.close()
        self._proxies.clear()
        self._sockets.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
