"""`/v1/workspaces`, `/v1/api_keys`: our extension, admin key only.

Keys are listed and retrieved without their secrets (shown once, at creation) and revoked
with `POST /v1/api_keys/{id}/revoke`; a revoked key authenticates nothing from then on.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import require_admin
from sessiond.api.bodies import decode_body, json_response
from sessiond.api.listing import record_page
from sessiond.api.services import services
from sessiond.runtime.resources.workspaces import REVOKED_TOPIC, CreateApiKey, CreateWorkspace


async def create_workspace(request: Request) -> Response:
    """Create a workspace."""
    await require_admin(request)
    params = await decode_body(request, CreateWorkspace)
    return json_response(await services(request).workspaces.create_workspace(params))


async def create_api_key(request: Request) -> Response:
    """Create a key in a workspace; the secret is in this response only."""
    await require_admin(request)
    params = await decode_body(request, CreateApiKey)
    return json_response(await services(request).workspaces.create_key(params))


async def list_api_keys(request: Request) -> Response:
    """Keys of one workspace (`?workspace_id=`, default: the one the admin acts in),
    newest first; revoked ones with `include_archived=true`."""
    admin = await require_admin(request)
    workspace = request.query_params.get("workspace_id") or admin.workspace_id
    return await record_page(
        request,
        kind="api_key",
        workspace_id=workspace,
        fetch=services(request).workspaces.list_keys,
    )


async def retrieve_api_key(request: Request) -> Response:
    """One key, without its secret."""
    await require_admin(request)
    key_id = request.path_params["key_id"]
    return json_response(await services(request).workspaces.get_key(key_id))


async def revoke_api_key(request: Request) -> Response:
    """Revoke a key at once (idempotent)."""
    await require_admin(request)
    key_id = request.path_params["key_id"]
    svc = services(request)
    revoked = await svc.workspaces.revoke_key(key_id)
    request.app.state.stream_slots.revoke(revoked.id)  # here at once; elsewhere by the bus
    await svc.store.publish(REVOKED_TOPIC, revoked.id)
    return json_response(revoked)


routes = [
    Route("/v1/workspaces", create_workspace, methods=["POST"]),
    Route("/v1/api_keys", create_api_key, methods=["POST"]),
    Route("/v1/api_keys", list_api_keys, methods=["GET"]),
    Route("/v1/api_keys/{key_id}", retrieve_api_key, methods=["GET"]),
    Route("/v1/api_keys/{key_id}/revoke", revoke_api_key, methods=["POST"]),
]
