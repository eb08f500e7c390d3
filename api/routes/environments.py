"""`/v1/environments`: create, retrieve, list, update, archive, delete."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import workspace_id
from sessiond.api.bodies import decode_body, json_response
from sessiond.api.listing import record_page
from sessiond.api.services import services
from sessiond.runtime.resources.environments import (
    KIND,
    CreateEnvironment,
    EnvironmentService,
    UpdateEnvironment,
)


def _environments(request: Request) -> EnvironmentService:
    return services(request).environments


async def create_environment(request: Request) -> Response:
    """Create."""
    ws = await workspace_id(request)
    params = await decode_body(request, CreateEnvironment)
    return json_response(await _environments(request).create(ws, params))


async def retrieve_environment(request: Request) -> Response:
    """Retrieve."""
    ws = await workspace_id(request)
    env_id = request.path_params["environment_id"]
    return json_response(await _environments(request).retrieve(ws, env_id))


async def update_environment(request: Request) -> Response:
    """Tri-state update."""
    ws = await workspace_id(request)
    params = await decode_body(request, UpdateEnvironment)
    env_id = request.path_params["environment_id"]
    return json_response(await _environments(request).update(ws, env_id, params))


async def archive_environment(request: Request) -> Response:
    """Archive."""
    ws = await workspace_id(request)
    env_id = request.path_params["environment_id"]
    return json_response(await _environments(request).archive(ws, env_id))


async def delete_environment(request: Request) -> Response:
    """Delete."""
    ws = await workspace_id(request)
    env_id = request.path_params["environment_id"]
    return json_response(await _environments(request).delete(ws, env_id))


async def list_environments(request: Request) -> Response:
    """Newest first."""
    ws = await workspace_id(request)
    return await record_page(request, kind=KIND, workspace_id=ws, fetch=_environments(request).list)


routes = [
    Route("/v1/environments", create_environment, methods=["POST"]),
    Route("/v1/environments", list_environments, methods=["GET"]),
    Route("/v1/environments/{environment_id}", retrieve_environment, methods=["GET"]),
    Route("/v1/environments/{environment_id}", update_environment, methods=["POST"]),
    Route("/v1/environments/{environment_id}", delete_environment, methods=["DELETE"]),
    Route("/v1/environments/{environment_id}/archive", archive_environment, methods=["POST"]),
]
