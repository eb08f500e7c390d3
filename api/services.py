"""The runtime services one app instance uses, built on one opened store."""

from __future__ import annotations

from sessiond.api.config import Config
from sessiond.evals.service import EvalService
from sessiond.runtime.agents import AgentService
from sessiond.runtime.deltas import DeltaHub
from sessiond.runtime.engine import Engine
from sessiond.runtime.environments import EnvironmentService
from sessiond.runtime.providers.resilience import ModelClient
from sessiond.runtime.providers.routing import Router
from sessiond.runtime.sessions import SessionService
from sessiond.runtime.supervisor import Supervisor
from sessiond.runtime.tools.workdirs import Workdirs
from sessiond.runtime.workspaces import Workspaces
from sessiond.store.backends import open_store
from sessiond.store.protocol import Store


class Services:
    """Holds the store and the services over it for the app's lifetime."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.deltas = DeltaHub()
        self.workspaces = Workspaces(store, config.admin_api_key)
        self.agents = AgentService(store)
        self.environments = EnvironmentService(store)
        self.router = Router(config.providers)
        self.models = ModelClient(self.router, config.retry)
        self.workdirs = Workdirs(config.resolved_workdir_root())
        self.engine = Engine(
            store,
            self.models,
            self.deltas,
            self.workdirs,
            max_model_requests=config.limits.max_model_requests_per_turn,
            tool_limits=config.tool_limits,
        )
        self.supervisor = Supervisor(store, self.engine, sweep_s=config.recovery_sweep_s)
        self.sessions = SessionService(
            store,
            self.agents,
            self.environments,
            self.workdirs,
            on_input=self.supervisor.notify if config.run_engine else None,
            limits=config.limits,
        )
        self.evals = EvalService(
            store,
            self.sessions,
            self.agents,
            self.environments,
            self.models,
            limits=config.limits,
            python_modules=config.python_scorer_modules,
        )

    @classmethod
    async def start(cls, config: Config) -> Services:
        """Open the store (migrations run here) and make sure the default workspace exists."""
        store = open_store(config.database_url)
        await store.open()
        try:
            services = cls(store, config)
            await services.workspaces.ensure_default()
        except BaseException:
            await store.close()
            raise
        return services

    async def stop(self) -> None:
        """Close providers, flush and close the store."""
        await self.router.close()
        await self.store.close()
