"""`/v1/environments/{id}/work…`: the work API of self-hosted environments (§2.7), and
`/v1/environments/{id}/keys…`: their environment keys (our extension, see
runtime/resources/environment_keys.py). Which credential may call what is decided in api/auth.py."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import principal, require_workspace_key, workspace_id
from sessiond.api.bodies import decode_body, json_response, raw_json_response
from sessiond.api.listing import record_page
from sessiond.api.query import query_int
from sessiond.api.services import services
from sessiond.runtime.resources.environment_keys import KIND as KEY_KIND
from sessiond.runtime.resources.environment_keys import CreateEnvironmentKey, EnvironmentKeys
from sessiond.runtime.resources.work import KIND, StopWork, UpdateWork, WorkQueue
from sessiond.runtime.resources.workspaces import REVOKED_TOPIC
from sessiond.store.errors import InvalidInputError


def _queue(request: Request) -> WorkQueue:
    return services(request).work


def _keys(request: Request) -> EnvironmentKeys:
    return services(request).environment_keys


async def _environment(request: Request) -> str:
    """The path's environment, once the caller is let in (api/auth.py) and the
    environment is known to be the caller's workspace's (any other is not found)."""
    found = await principal(request)
    env_id = str(request.path_params["environment_id"])
    await services(request).environments.retrieve(found.workspace_id, env_id)
    return env_id


async def poll_work(request: Request) -> Response:
    """An item with its secret, or JSON `null` when none came within `block_ms`."""
    env_id = await _environment(request)
    block_ms = query_int(request, "block_ms", default=None, minimum=1)
    if block_ms is not None and block_ms > 999:
        raise InvalidInputError("block_ms: must be between 1 and 999", code="invalid_block_ms")
    reclaim = query_int(request, "reclaim_older_than_ms", default=None, minimum=0)
    found = await principal(request)
    work = await _queue(request).poll(
        env_id,
        worker_id=request.headers.get("anthropic-worker-id"),
        block_ms=block_ms,
        reclaim_older_than_ms=reclaim,
        issued_by=found.key_id if found.scope == "environment" else None,
    )
    if work is None:
        return raw_json_response(b"null")
    return json_response(work)


async def ack_work(request: Request) -> Response:
    """`queued` → `starting`."""
    env_id = await _environment(request)
    return json_response(await _queue(request).ack(env_id, request.path_params["work_id"]))


async def heartbeat_work(request: Request) -> Response:
    """Extend the lease (query: `expected_last_heartbeat`, `desired_ttl_seconds`)."""
    env_id = await _environment(request)
    expected = request.query_params.get("expected_last_heartbeat")
    beat = await _queue(request).heartbeat(
        env_id,
        request.path_params["work_id"],
        expected_last_heartbeat=expected if expected else None,
        desired_ttl_seconds=query_int(request, "desired_ttl_seconds", default=None),
    )
    return json_response(beat)


async def stop_work(request: Request) -> Response:
    """Stop (409 once stopped)."""
    env_id = await _environment(request)
    body = await request.body()
    params = await decode_body(request, StopWork) if body.strip() else StopWork()
    work = await _queue(request).stop(env_id, request.path_params["work_id"], force=params.force)
    return json_response(work)


async def retrieve_work(request: Request) -> Response:
    """One item (no secret)."""
    env_id = await _environment(request)
    return json_response(await _queue(request).retrieve(env_id, request.path_params["work_id"]))


async def update_work(request: Request) -> Response:
    """Patch the item's metadata."""
    env_id = await _environment(request)
    params = await decode_body(request, UpdateWork)
    work_id = request.path_params["work_id"]
    return json_response(await _queue(request).update(env_id, work_id, params))


async def list_work(request: Request) -> Response:
    """The environment's items, newest first."""
    env_id = await _environment(request)
    ws = await workspace_id(request)
    await _queue(request).stats(env_id)  # the environment exists here and is self-hosted
    return await record_page(
        request,
        kind=KIND,
        workspace_id=ws,
        fetch=_queue(request).list_items,
        tags={"environment_id": frozenset({env_id})},
    )


async def work_stats(request: Request) -> Response:
    """Depth, pending, oldest queued, workers polling."""
    env_id = await _environment(request)
    return json_response(await _queue(request).stats(env_id))


async def create_key(request: Request) -> Response:
    """Mint an environment key (its secret is shown here only)."""
    ws = await require_workspace_key(request)
    params = await decode_body(request, CreateEnvironmentKey)
    env_id = request.path_params["environment_id"]
    return json_response(await _keys(request).create(ws, env_id, params))


async def list_keys(request: Request) -> Response:
    """The environment's keys, newest first (never their secrets)."""
    ws = await require_workspace_key(request)
    env_id = request.path_params["environment_id"]
    await services(request).environments.retrieve(ws, env_id)
    return await record_page(
        request,
        kind=KEY_KIND,
        workspace_id=ws,
        fetch=_keys(request).list,
        tags={"environment_id": frozenset({env_id})},
    )


async def revoke_key(request: Request) -> Response:
    """Revoke a key; its open streams end."""
    ws = await require_workspace_key(request)
    env_id = request.path_params["environment_id"]
    key = await _keys(request).revoke(ws, env_id, request.path_params["key_id"])
    request.app.state.stream_slots.revoke(key.id)  # here at once; elsewhere by the bus
    await services(request).store.publish(REVOKED_TOPIC, key.id)
    return json_response(key)


_WORK = "/v1/environments/{environment_id}/work"
routes = [
    Route(f"{_WORK}/poll", poll_work, methods=["GET"]),
    Route(f"{_WORK}/stats", work_stats, methods=["GET"]),
    Route(_WORK, list_work, methods=["GET"]),
    Route(f"{_WORK}/{{work_id}}", retrieve_work, methods=["GET"]),
    Route(f"{_WORK}/{{work_id}}", update_work, methods=["POST"]),
    Route(f"{_WORK}/{{work_id}}/ack", ack_work, methods=["POST"]),
    Route(f"{_WORK}/{{work_id}}/heartbeat", heartbeat_work, methods=["POST"]),
    Route(f"{_WORK}/{{work_id}}/stop", stop_work, methods=["POST"]),
    Route("/v1/environments/{environment_id}/keys", create_key, methods=["POST"]),
    Route("/v1/environments/{environment_id}/keys", list_keys, methods=["GET"]),
    Route("/v1/environments/{environment_id}/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
]
