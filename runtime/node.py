"""The runtime's services on one opened store: what an API process and a worker share.

`api/services.py` adds the eval service (a layer above) for API processes; `sessiond
worker` runs this alone, with no HTTP layer imported.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Self

from sessiond.runtime.engine.deltas import DeltaHub
from sessiond.runtime.engine.executor import SessionExecutors
from sessiond.runtime.engine.loop import Engine, LiveModels, Models, ModelSource
from sessiond.runtime.engine.supervisor import Supervisor
from sessiond.runtime.providers.resilience import ModelClient
from sessiond.runtime.providers.routing import Router
from sessiond.runtime.resources.agents import AgentService
from sessiond.runtime.resources.environment_keys import EnvironmentKeys
from sessiond.runtime.resources.environments import EnvironmentService
from sessiond.runtime.resources.sessions import SessionService
from sessiond.runtime.resources.work import RemoteExecutor, WorkQueue
from sessiond.runtime.resources.workspaces import Workspaces
from sessiond.runtime.sandbox.bwrap import Assets, detect, isolation_warning
from sessiond.runtime.sandbox.local import LocalExecutor
from sessiond.runtime.sandbox.network import EgressProxies
from sessiond.runtime.sandbox.packages import PackageLayers, python_version_of
from sessiond.runtime.settings import Settings
from sessiond.runtime.tools.workdirs import Workdirs
from sessiond.store.backends import open_store
from sessiond.store.clock import new_id
from sessiond.store.protocol import Store

log = logging.getLogger("sessiond")


def process_name() -> str:
    """Who this process is, as a lease holder: host, pid and a random part (a restarted
    process with a reused pid is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('proc')[-8:]}"


def live_models(store: Store, models: Models) -> ModelSource:
    """The providers for every session (no cassettes: see `LiveModels`)."""
    return LiveModels(models)


class Node:
    """The store and the runtime services over it, for one process's lifetime."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        admin_api_key: str | None = None,
        model_source: Callable[[Store, Models], ModelSource] | None = None,
    ) -> None:
        """`model_source(store, providers)` is what the engine asks for a session's
        models (the eval layer passes one that serves cassette re-runs)."""
        self.store = store
        self.settings = settings
        self.deltas = DeltaHub(store if settings.distributed else None)
        self.workspaces = Workspaces(store, admin_api_key)
        self.agents = AgentService(store)
        self.environments = EnvironmentService(store)
        self.router = Router(settings.providers)
        self.models = ModelClient(self.router, settings.retry)
        self.workdirs = Workdirs(settings.resolved_workdir_root())
        self.sandbox = detect(mode=settings.sandbox, uid_base=settings.sandbox_uid_base)
        self.isolation_warning = isolation_warning(self.sandbox)
        if self.isolation_warning:
            log.warning("%s", self.isolation_warning)
        shared = self.workdirs.root / ".sandbox"
        assets = Assets(shared / "etc")
        assets.write()
        self.package_layers = PackageLayers(
            shared / "packages", python_version=python_version_of(self.sandbox.python)
        )
        self.egress = EgressProxies(settings.egress_allow_private)
        local = LocalExecutor(
            self.environments,
            self.workdirs,
            self.sandbox,
            layers=self.package_layers,
            proxies=self.egress,
            assets=assets,
            limits=settings.tool_limits,
        )
        self.work = WorkQueue(store, self.environments, ttl_s=settings.work_lease_ttl_s)
        self.environment_keys = EnvironmentKeys(store, self.environments)
        # New resource families (issue 15): one line each, replacing its marker.
        # <files>
        # <skills>
        # <vaults>
        self.executors = SessionExecutors(local, RemoteExecutor(self.work))
        self.engine = Engine(
            store,
            (model_source or live_models)(store, self.models),
            self.deltas,
            self.executors,
            max_model_requests=settings.limits.max_model_requests_per_turn,
        )
        self.supervisor = Supervisor(
            store,
            self.engine,
            sweep_s=settings.recovery_sweep_s,
            owner=process_name() if settings.distributed else None,
            lease_ttl_s=settings.lease_ttl_s,
            drives=settings.drives,
        )
        self.sessions = SessionService(
            store,
            self.agents,
            self.environments,
            self.workdirs,
            on_input=self.supervisor.notify if settings.run_engine else None,
            limits=settings.limits,
            sandboxed=self.sandbox.available,
            work=self.work,
        )

    @classmethod
    async def open(cls, settings: Settings, **options: Any) -> Self:
        """Open the store (migrations run here), build the services over it, and make
        sure the default workspace exists."""
        store = open_store(settings.database_url)
        await store.open()
        try:
            node = cls(store, settings, **options)
            await node.workspaces.ensure_default()
        except BaseException:
            await store.close()
            raise
        return node

    async def close(self) -> None:
        """Close providers and egress proxies, flush and close the store."""
        self.work.close()
        await self.egress.close()
        await self.router.close()
        await self.store.close()
