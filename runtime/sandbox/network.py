"""The egress proxies sandboxes reach out through: one per policy, shared by every
session whose environment has that policy, each on a Unix socket of its own.

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
from pathlib import Path
from urllib.parse import urlsplit

from sessiond.runtime.environments import Limited
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


class EgressProxies:
    """The running proxies of this process, started on first use."""

    def __init__(self, allow_private: tuple[str, ...] = ()) -> None:
        self._allow_private = allow_private
        self._dir: Path | None = None
        self._proxies: dict[EgressPolicy, EgressProxy] = {}
        self._sockets: dict[EgressPolicy, Path] = {}
        self._starting = asyncio.Lock()

    async def limited(self, networking: Limited) -> Path:
        """The socket of the proxy for a `limited` environment."""
        extra = registry_hosts() if networking.allow_package_managers else ()
        policy = EgressPolicy(
            allowed_hosts=tuple(networking.allowed_hosts),
            extra_hosts=extra,
            allow_private=self._allow_private,
        )
        return await self._socket(policy)

    async def public(self) -> Path:
        """The socket of the proxy that admits any public host."""
        policy = EgressPolicy(allowed_hosts=("*",), allow_private=self._allow_private)
        return await self._socket(policy)

    async def _socket(self, policy: EgressPolicy) -> Path:
        socket = self._sockets.get(policy)
        if socket is not None:
            return socket
        async with self._starting:
            return self._sockets.get(policy) or await self._start(policy)

    async def _start(self, policy: EgressPolicy) -> Path:
        if self._dir is None:
            # Short: a Unix socket's path holds at most 107 bytes.
            self._dir = Path(tempfile.mkdtemp(prefix="sessiond-egress-"))
        name = hashlib.sha256(repr(policy).encode()).hexdigest()[:16]
        socket = self._dir / f"{name}.sock"
        proxy = EgressProxy(socket, policy)
        await proxy.start()
        self._proxies[policy] = proxy
        self._sockets[policy] = socket
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
