"""Environments through the real SDK."""

from __future__ import annotations

import anthropic
import pytest


def test_crud_and_resolved_config(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(
        name="sandbox",
        config={
            "type": "cloud",
            "networking": {
                "type": "limited",
                "allowed_hosts": ["pypi.org"],
                "allow_package_managers": True,
            },
            "packages": {"pip": ["requests"]},
        },
        metadata={"a": "1", "b": "2"},
    )
    assert env.type == "environment" and env.id.startswith("env_")
    assert env.config.type == "cloud"
    assert env.config.packages.pip == ["requests"] and env.config.packages.npm == []  # type: ignore[union-attr]
    updated = client.beta.environments.update(env.id, metadata={"a": "", "c": "3"}, name="renamed")
    assert updated.name == "renamed" and updated.metadata == {"b": "2", "c": "3"}
    assert updated.config.packages.pip == ["requests"]  # type: ignore[union-attr]
    assert client.beta.environments.retrieve(env.id).name == "renamed"
    assert env.id in [e.id for e in client.beta.environments.list(limit=100)]
    deleted = client.beta.environments.delete(env.id)
    assert deleted.type == "environment_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.environments.retrieve(env.id)


def test_type_change_and_archived_updates_are_refused(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="e", config={"type": "cloud"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.environments.update(env.id, config={"type": "self_hosted"})
    assert caught.value.body["error"]["details"]["error_code"] == "invalid_config_type_change"  # type: ignore[index]
    client.beta.environments.archive(env.id)
    with pytest.raises(anthropic.BadRequestError) as archived:
        client.beta.environments.update(env.id, name="x")
    assert archived.value.body["error"]["details"]["error_code"] == "environment_archived"  # type: ignore[index]


def test_packages_need_package_managers_under_limited_networking(
    client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.beta.environments.create(
            name="e",
            config={"type": "cloud", "networking": {"type": "limited"}, "packages": {"pip": ["x"]}},
        )
