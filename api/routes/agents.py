"""`/v1/agents`: create, retrieve (`?version=`), list, update (new version), archive, versions."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessiond.api.auth import workspace_id
from sessiond.api.bodies import decode_body, json_response, raw_json_response
from sessiond.api.listing import record_page
from sessiond.api.pagination import encode_cursor, page_body, seq_cursor
from sessiond.api.query import query_int
from sessiond.api.services import services
from sessiond.runtime.resources.agents import KIND, AgentService, CreateAgent, UpdateAgent

_encode = msgspec.json.Encoder().encode


def _agents(request: Request) -> AgentService:
    return services(request).agents


async def create_agent(request: Request) -> Response:
    """Version 1 of a new agent."""
    ws = await workspace_id(request)
    return json_response(await _agents(request).create(ws, await decode_body(request, CreateAgent)))


async def retrieve_agent(request: Request) -> Response:
    """The latest version, or `?version=N`."""
    ws = await workspace_id(request)
    version = query_int(request, "version", default=None)
    agent_id = request.path_params["agent_id"]
    return json_response(await _agents(request).retrieve(ws, agent_id, version))


async def update_agent(request: Request) -> Response:
    """Write the next version."""
    ws = await workspace_id(request)
    params = await decode_body(request, UpdateAgent)
    return json_response(await _agents(request).update(ws, request.path_params["agent_id"], params))


async def archive_agent(request: Request) -> Response:
    """Archive."""
    ws = await workspace_id(request)
    return json_response(await _agents(request).archive(ws, request.path_params["agent_id"]))


async def list_agents(request: Request) -> Response:
    """Newest first."""
    ws = await workspace_id(request)
    return await record_page(request, kind=KIND, workspace_id=ws, fetch=_agents(request).list)


async def list_versions(request: Request) -> Response:
    """Every version, oldest first."""
    ws = await workspace_id(request)
    limit = query_int(request, "limit", default=20, maximum=100) or 20
    after = seq_cursor(request) or 0
    versions = await _agents(request).list_versions(
        ws, request.path_params["agent_id"], after_version=after, limit=limit + 1
    )
    more = len(versions) > limit
    versions = versions[:limit]
    next_page = encode_cursor(versions[-1].version) if more else None
    return raw_json_response(page_body([_encode(v) for v in versions], next_page))


routes = [
    Route("/v1/agents", create_agent, methods=["POST"]),
    Route("/v1/agents", list_agents, methods=["GET"]),
    Route("/v1/agents/{agent_id}", retrieve_agent, methods=["GET"]),
    Route("/v1/agents/{agent_id}", update_agent, methods=["POST"]),
    Route("/v1/agents/{agent_id}/archive", archive_agent, methods=["POST"]),
    Route("/v1/agents/{agent_id}/versions", list_versions, methods=["GET"]),
]
