"""`POST /v1/workspaces`, `POST /v1/api_keys`: our extension, admin key only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import require_admin
from sessiond.api.bodies import decode_body, json_response
from sessiond.runtime.workspaces import CreateApiKey, CreateWorkspace


async def create_workspace(request: Request) -> Response:
    """Create a workspace."""
    await require_admin(request)
    params = await decode_body(request, CreateWorkspace)
    return json_response(await request.app.state.services.workspaces.create_workspace(params))


async def create_api_key(request: Request) -> Response:
    """Create a key in a workspace; the secret is in this response only."""
    await require_admin(request)
    params = await decode_body(request, CreateApiKey)
    return json_response(await request.app.state.services.workspaces.create_key(params))


routes = [
    Route("/v1/workspaces", create_workspace, methods=["POST"]),
    Route("/v1/api_keys", create_api_key, methods=["POST"]),
]
