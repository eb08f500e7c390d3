"""Without the sandbox (SESSIOND_SANDBOX=off, or no bubblewrap): start-up says what
isolation is lost, limited networking and packages are refused, and unrestricted
environments' tools run on the host as the README says. Never silently weaker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from engine_harness import collect_until_idle
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script
from harness import ADMIN_KEY, RunningServer, make_config

from sessiond.runtime.providers.routing import ProviderConfig

MODEL = "claude-sonnet-5-5"


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def started(
    script: Script, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, list[str]]]:
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logging.getLogger("sessiond").addHandler(handler)
    try:
        with ThreadedServer(create_app(script)) as fake:
            provider = ProviderConfig(
                name="fake", kind="anthropic", models=["claude-*"], base_url=fake.base_url
            )
            running = RunningServer(
                make_config(
                    tmp_path_factory.mktemp("no-sandbox"), providers=[provider], sandbox="off"
                )
            )
            running.start()
            yield running, warnings
            running.stop()
    finally:
        logging.getLogger("sessiond").removeHandler(handler)


@pytest.fixture
def sdk(started: tuple[RunningServer, list[str]], script: Script) -> Iterator[anthropic.Anthropic]:
    script.reset()
    with anthropic.Anthropic(base_url=started[0].base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def _agent(sdk: anthropic.Anthropic) -> str:
    made = sdk.beta.agents.create(name="a", model=MODEL, tools=[{"type": "agent_toolset_20260401"}])
    return made.id


def test_start_up_says_exactly_what_isolation_is_lost(
    started: tuple[RunningServer, list[str]],
) -> None:
    said = " ".join(started[1])
    assert "no tool sandbox" in said and "SESSIOND_SANDBOX=off" in said
    assert "loopback" in said and "refused" in said


@pytest.mark.parametrize(
    "config",
    [
        {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["example.com"]}},
        {"type": "cloud", "packages": {"pip": ["requests"]}},
    ],
)
def test_limited_networking_and_packages_are_refused_without_the_sandbox(
    sdk: anthropic.Anthropic, config: dict[str, object]
) -> None:
    env = sdk.beta.environments.create(name="e", config=config)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.beta.sessions.create(agent=_agent(sdk), environment_id=env.id)
    assert "without the tool sandbox" in refused.value.message
    assert refused.value.body["error"]["details"]["error_code"] == "unenforced_config"  # type: ignore[index]


def test_unrestricted_tools_run_on_the_host_as_documented(
    sdk: anthropic.Anthropic, started: tuple[RunningServer, list[str]], script: Script
) -> None:
    env = sdk.beta.environments.create(name="plain")
    session_id = sdk.beta.sessions.create(agent=_agent(sdk), environment_id=env.id).id
    script.push(Reply(tool_calls=[("bash", {"command": "pwd; id -u"})]), Reply(text="ok"))
    events = collect_until_idle(
        sdk, session_id, [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]
    )
    result = next(e for e in events if e.type == "agent.tool_result")
    workdir = Path(started[0].config.workdir_root).resolve() / session_id
    lines = result.content[0].text.split()
    assert lines[0] == str(workdir)  # the host's directory, not the sandbox's /workspace
    assert not result.is_error
