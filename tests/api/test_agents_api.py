"""Agents through the real SDK: versions, conditional updates, archive, pages, shapes."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaManagedAgentsAgent
from harness import ADMIN_KEY, RunningServer, make_agent


def test_create_returns_the_full_resolved_shape(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name="coder",
        model="claude-sonnet-4-5",
        system="be terse",
        tools=[
            {"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]},
            {
                "type": "custom",
                "name": "lookup",
                "description": "look things up",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        ],
        metadata={"team": "a"},
    )
    assert agent.type == "agent" and agent.version == 1 and agent.id.startswith("agent_")
    assert agent.model.id == "claude-sonnet-4-5" and agent.model.effort is not None
    assert agent.execution_identity.type == "service_account"
    toolset = agent.tools[0]
    assert toolset.type == "agent_toolset_20260401"
    configs = {c.name: c for c in toolset.configs}  # type: ignore[union-attr]
    assert len(configs) == 8 and configs["bash"].enabled is False and configs["read"].enabled
    assert configs["read"].permission_policy.type == "always_allow"
    raw = client.beta.agents.with_raw_response.retrieve(agent.id).http_response.json()
    BetaManagedAgentsAgent.model_validate(raw)
    for field in ("tools", "mcp_servers", "skills", "metadata", "execution_identity", "model"):
        assert raw[field] is not None


def test_updates_make_versions_and_old_versions_stay_readable(client: anthropic.Anthropic) -> None:
    agent = make_agent(client, system="v1")
    same = client.beta.agents.update(agent.id, system="v1")
    assert same.version == 1, "a no-op update must not bump the version"
    v2 = client.beta.agents.update(agent.id, system="v2", metadata={"k": "v"})
    assert v2.version == 2 and v2.system == "v2" and v2.metadata == {"k": "v"}
    v3 = client.beta.agents.update(agent.id, metadata={"k": None, "j": "w"})
    assert v3.version == 3 and v3.metadata == {"j": "w"} and v3.system == "v2"
    assert client.beta.agents.retrieve(agent.id, version=1).system == "v1"
    assert client.beta.agents.retrieve(agent.id).version == 3
    versions = [a.version for a in client.beta.agents.versions.list(agent.id, limit=2)]
    assert versions == [1, 2, 3]
    with pytest.raises(anthropic.NotFoundError):
        client.beta.agents.retrieve(agent.id, version=9)


def test_version_mismatch_is_a_409_the_sdk_does_not_retry(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    agent = make_agent(client)
    client.beta.agents.update(agent.id, system="changed")
    with pytest.raises(anthropic.ConflictError):
        client.beta.agents.update(agent.id, system="stale", version=1)
    raw = httpx.post(
        f"{server.base_url}/v1/agents/{agent.id}",
        headers={"x-api-key": ADMIN_KEY},
        json={"system": "stale", "version": 1},
    )
    assert raw.status_code == 409 and raw.headers["x-should-retry"] == "false"
    assert raw.json()["error"]["details"]["error_code"] == "version_mismatch"
    assert client.beta.agents.retrieve(agent.id).system == "changed"


def test_archive_hides_from_list_and_blocks_updates(client: anthropic.Anthropic) -> None:
    agent = make_agent(client, name="to-archive")
    archived = client.beta.agents.archive(agent.id)
    assert archived.archived_at is not None
    assert agent.id not in [a.id for a in client.beta.agents.list(limit=100)]
    assert agent.id in [a.id for a in client.beta.agents.list(limit=100, include_archived=True)]
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, system="x")


def test_list_pages_through_every_agent_once(client: anthropic.Anthropic) -> None:
    made = {make_agent(client, name=f"page-{i}").id for i in range(5)}
    first = client.beta.agents.list(limit=2)
    assert len(first.data) == 2 and first.next_page is not None
    seen = [a.id for a in client.beta.agents.list(limit=2)]
    assert len(seen) == len(set(seen)) and made <= set(seen)


@pytest.mark.parametrize(
    "bad",
    [
        {
            "tools": [
                {
                    "type": "custom",
                    "name": "bad name!",
                    "description": "d",
                    "input_schema": {"type": "object"},
                }
            ]
        },
        {"tools": [{"type": "mcp_toolset", "mcp_server_name": "missing"}]},
        {"mcp_servers": [{"type": "url", "name": "srv", "url": "https://x"}]},
        {"tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "teleport"}]}]},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"extra_body": {"unknown_field": 1}},
    ],
)
def test_bad_configs_are_400_and_create_nothing(client: anthropic.Anthropic, bad: dict) -> None:  # type: ignore[type-arg]
    before = {a.id for a in client.beta.agents.list(limit=100, include_archived=True)}
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.create(name="bad", model="claude-sonnet-4-5", **bad)
    after = {a.id for a in client.beta.agents.list(limit=100, include_archived=True)}
    assert after == before
