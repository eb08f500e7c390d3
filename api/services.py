"""The services one API process uses: the runtime's (runtime/node.py) plus evals."""

from __future__ import annotations

from starlette.requests import Request

from sessiond.api.config import Config
from sessiond.evals.cassette import CassetteModels
from sessiond.evals.service import EvalService
from sessiond.runtime.node import Node
from sessiond.store.protocol import Store


class Services(Node):
    """The runtime's services and the eval service, for the app's lifetime."""

    def __init__(self, store: Store, config: Config) -> None:
        super().__init__(
            store,
            config,
            admin_api_key=config.admin_api_key,
            model_source=CassetteModels,
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
        """Open the store and build every service over it."""
        return await cls.open(config)

    async def stop(self) -> None:
        """Close providers, flush and close the store."""
        await self.close()


def services(request: Request) -> Services:
    """The app's services, typed (handlers reach every service through this)."""
    found: Services = request.app.state.services
    return found
