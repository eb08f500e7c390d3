"""Sessions CRUD through the real SDK."""

from __future__ import annotations

import anthropic
import pytest
from harness import make_agent, make_session, user_message


def test_create_pins_the_latest_agent_version_and_starts_idle(client: anthropic.Anthropic) -> None:
    agent = make_agent(client, system="v1")
    environment = client.beta.environments.create(name="env")
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id, title="t")
    assert session.id.startswith("sesn_") and session.type == "session"
    assert session.status == "idle" and session.title == "t"
    assert session.agent.id == agent.id and session.agent.version == 1
    client.beta.agents.update(agent.id, system="v2")
    assert client.beta.sessions.retrieve(session.id).agent.system == "v1"
    later = client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    assert later.agent.version == 2 and later.agent.system == "v2"
    pinned = client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=environment.id
    )
    assert pinned.agent.version == 1 and pinned.agent.system == "v1"


def test_create_refuses_unknown_or_archived_environment_and_agent(
    client: anthropic.Anthropic,
) -> None:
    agent = make_agent(client)
    environment = client.beta.environments.create(name="env")
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent=agent.id, environment_id="env_missing")
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent="agent_missing", environment_id=environment.id)
    client.beta.environments.archive(environment.id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id)
    fresh = client.beta.environments.create(name="env2")
    client.beta.agents.archive(agent.id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.create(agent=agent.id, environment_id=fresh.id)


def test_initial_events_are_the_first_log_entries(client: anthropic.Anthropic) -> None:
    session = make_session(client, initial_events=[user_message("hello")])
    events = list(client.beta.sessions.events.list(session.id))
    assert [e.type for e in events] == ["user.message"]
    with pytest.raises(anthropic.BadRequestError):
        make_session(client, initial_events=[{"type": "user.interrupt"}])


def test_update_title_and_metadata_emits_session_updated(client: anthropic.Anthropic) -> None:
    session = make_session(client, metadata={"a": "1", "b": "2"})
    updated = client.beta.sessions.update(
        session.id, title="renamed", metadata={"a": None, "c": "3"}
    )
    assert updated.title == "renamed"
    assert updated.metadata == {"b": "2", "c": "3"}
    events = list(client.beta.sessions.events.list(session.id))
    assert [e.type for e in events] == ["session.updated"]
    assert client.beta.sessions.retrieve(session.id).metadata == {"b": "2", "c": "3"}
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.update(session.id, vault_ids=["vlt_x"])


def test_list_filters_orders_and_pages_both_ways(client: anthropic.Anthropic) -> None:
    agent = make_agent(client)
    environment = client.beta.environments.create(name="env")
    made = [
        client.beta.sessions.create(agent=agent.id, environment_id=environment.id).id
        for _ in range(5)
    ]
    newest_first = [s.id for s in client.beta.sessions.list(agent_id=agent.id, limit=2)]
    assert newest_first == list(reversed(made))
    oldest_first = [
        s.id for s in client.beta.sessions.list(agent_id=agent.id, limit=2, order="asc")
    ]
    assert oldest_first == made
    page1 = client.beta.sessions.list(agent_id=agent.id, limit=2, order="asc")
    page2 = client.beta.sessions.list(agent_id=agent.id, limit=2, order="asc", page=page1.next_page)
    assert [s.id for s in page2.data] == made[2:4]
    assert page2.prev_page is not None
    back = client.beta.sessions.list(agent_id=agent.id, limit=2, order="asc", page=page2.prev_page)
    assert [s.id for s in back.data] == made[0:2]
    assert [s.id for s in client.beta.sessions.list(agent_id=agent.id, statuses=["running"])] == []
    assert len(list(client.beta.sessions.list(agent_id=agent.id, agent_version=1))) == 5


def test_archive_hides_from_list_and_delete_removes(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    agent_id = session.agent.id
    archived = client.beta.sessions.archive(session.id)
    assert archived.archived_at is not None
    assert [s.id for s in client.beta.sessions.list(agent_id=agent_id)] == []
    assert [s.id for s in client.beta.sessions.list(agent_id=agent_id, include_archived=True)] == [
        session.id
    ]
    deleted = client.beta.sessions.delete(session.id)
    assert deleted.id == session.id and deleted.type == "session_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.retrieve(session.id)
