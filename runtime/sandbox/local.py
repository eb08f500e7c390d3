"""The executor of cloud sessions on this host: each tool call in the session's sandbox,
networked and provisioned as its environment says.

Per call it reads the session's environment (a change to it applies from the next call),
picks the network (slirp4netns for `unrestricted`, the egress proxy for `limited`, or the
proxy admitting any public host when slirp4netns is missing), makes sure the package
layer is built (reporting the install in the session's log), and runs the tool. Without
bubblewrap, unrestricted environments run their tools on the host (warned at start-up)
and everything else is refused: nothing runs silently weaker than configured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio

from sessiond.runtime.engine.executor import Report
from sessiond.runtime.resources.environments import CloudConfig, EnvironmentService, Limited
from sessiond.runtime.sandbox.bwrap import (
    Assets,
    Network,
    SandboxHost,
    SandboxPlace,
    prepare_workdir,
    session_uid,
)
from sessiond.runtime.sandbox.network import EgressProxies
from sessiond.runtime.sandbox.packages import PackageInstallError, PackageLayers, wanted
from sessiond.runtime.tools.toolset import HostPlace, Place, ToolLimits, ToolOutcome, run_tool
from sessiond.runtime.tools.workdirs import Workdirs
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.error_objects import RetryStatusRetrying, UnknownErrorObject
from sessiond.store.errors import NotFoundError, UnavailableError

log = logging.getLogger("sessiond.sandbox")


class LocalExecutor:
    """Runs cloud sessions' tools in sandboxes on this host."""

    remote = False

    def __init__(
        self,
        environments: EnvironmentService,
        workdirs: Workdirs,
        host: SandboxHost,
        *,
        layers: PackageLayers,
        proxies: EgressProxies,
        assets: Assets,
        limits: ToolLimits,
    ) -> None:
        self._environments = environments
        self._workdirs = workdirs
        self._host = host
        self._layers = layers
        self._proxies = proxies
        self._assets = assets
        self._limits = limits

    async def run(
        self,
        session_id: str,
        environment_id: str,
        name: str,
        params: dict[str, Any],
        report: Report,
    ) -> ToolOutcome:
        place = await self.place(session_id, environment_id, report)
        return await run_tool(name, params, limits=self._limits, place=place)

    async def hand_over(self, session_id: str, environment_id: str, workspace_id: str) -> None:
        """Nothing to hand over: tools run here."""

    async def place(self, session_id: str, environment_id: str, report: Report) -> Place:
        """The session's sandbox as its environment is now. Raises UnavailableError."""
        try:
            environment = await self._environments.get(environment_id)
        except NotFoundError:
            raise UnavailableError(
                f"the session's environment {environment_id} was deleted, so its tools cannot run",
                code="tools_unavailable",
                retryable=False,
            ) from None
        config = environment.config
        if not isinstance(config, CloudConfig):
            raise UnavailableError(
                f"environment {environment_id} is self-hosted: its tools run on its workers",
                code="tools_unavailable",
                retryable=False,
            )
        workdir = self._workdirs.path(session_id)
        if not self._host.available:
            if isinstance(config.networking, Limited) or wanted(config.packages):
                raise UnavailableError(
                    f"no sandbox on this server ({self._host.missing}): tools of environments "
                    "with limited networking or packages are refused rather than run "
                    "unconfined",
                    code="tools_unavailable",
                    retryable=False,
                )
            await anyio.to_thread.run_sync(lambda: workdir.mkdir(parents=True, exist_ok=True))
            return HostPlace(workdir, disk_floor_bytes=self._limits.disk_floor_bytes)
        layer = await self._layer(environment_id, config, report)
        uid = session_uid(self._host, session_id)
        await anyio.to_thread.run_sync(prepare_workdir, workdir, uid)
        return SandboxPlace(
            self._host,
            self._assets,
            workdir,
            uid=uid,
            network=await self._network(environment_id, config),
            layer=layer,
            limits=self._limits,
        )

    async def _network(self, environment_id: str, config: CloudConfig) -> Network:
        networking = config.networking
        if isinstance(networking, Limited):
            socket = await self._proxies.limited(environment_id, networking)
            return Network(mode="proxy", proxy_socket=str(socket))
        if self._host.slirp4netns is not None and self._host.route_filter:
            return Network(mode="slirp")
        socket = await self._proxies.public(environment_id)
        return Network(mode="proxy", proxy_socket=str(socket))

    async def _layer(self, environment_id: str, config: CloudConfig, report: Report) -> Path | None:
        packages = config.packages
        if not wanted(packages):
            return None
        if not self._layers.ready(packages):
            listed = ", ".join(packages.pip)
            log.info("environment %s: installing packages %s", environment_id, listed)
            note = UnknownErrorObject(
                message=f"installing the environment's packages ({listed}); tools wait for it",
                retry_status=RetryStatusRetrying(),
            )
            await report([ev.SessionError(error=note)])
        try:
            return await self._layers.ensure(packages)
        except PackageInstallError as exc:
            raise UnavailableError(
                f"installing the environment's packages failed: {exc}",
                code="tools_unavailable",
                retryable=False,
            ) from None
