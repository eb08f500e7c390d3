"""API keys, workspaces and the SDK's exception classes for auth failures."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from harness import ADMIN_KEY, RunningServer, make_session


def test_health_needs_no_key(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/health").json() == {"ok": True}


def test_missing_or_wrong_key_is_401(server: RunningServer) -> None:
    with anthropic.Anthropic(base_url=server.base_url, api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.beta.agents.list()
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert httpx.get(f"{server.base_url}/v1/agents").status_code == 401


def test_x_api_key_header_is_accepted(server: RunningServer) -> None:
    response = httpx.get(f"{server.base_url}/v1/agents", headers={"x-api-key": ADMIN_KEY})
    assert response.status_code == 200 and response.json()["next_page"] is None


def _new_key(server: RunningServer, workspace_id: str) -> str:
    created = httpx.post(
        f"{server.base_url}/v1/api_keys",
        headers={"x-api-key": ADMIN_KEY},
        json={"workspace_id": workspace_id, "name": "k"},
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["workspace_id"] == workspace_id and body["secret"].startswith("sk-sd-")
    return body["secret"]  # type: ignore[no-any-return]


def test_workspaces_isolate_resources(server: RunningServer, client: anthropic.Anthropic) -> None:
    made = httpx.post(
        f"{server.base_url}/v1/workspaces",
        headers={"x-api-key": ADMIN_KEY},
        json={"name": "team-b"},
    )
    assert made.status_code == 200
    workspace_b = made.json()["id"]
    key_a = _new_key(server, "wrkspc_default")
    key_b = _new_key(server, workspace_b)
    with anthropic.Anthropic(base_url=server.base_url, api_key=key_a, max_retries=0) as team_a:
        session = make_session(team_a)
        assert team_a.beta.sessions.retrieve(session.id).id == session.id
    with anthropic.Anthropic(base_url=server.base_url, api_key=key_b, max_retries=0) as team_b:
        with pytest.raises(anthropic.NotFoundError):
            team_b.beta.sessions.retrieve(session.id)
        with pytest.raises(anthropic.NotFoundError):
            team_b.beta.agents.retrieve(session.agent.id)
        with pytest.raises(anthropic.NotFoundError):
            team_b.beta.sessions.events.list(session.id)
        assert session.id not in [s.id for s in team_b.beta.sessions.list()]
        # A workspace key may not manage keys.
        with pytest.raises(anthropic.PermissionDeniedError):
            team_b.post("/v1/workspaces", body={"name": "x"}, cast_to=object)


def test_unknown_route_is_404_in_the_error_shape(server: RunningServer) -> None:
    response = httpx.get(f"{server.base_url}/v1/nothing", headers={"x-api-key": ADMIN_KEY})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
