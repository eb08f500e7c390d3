"""Shared pieces of the eval tests: a deterministic fake model and a server that uses it.

The fake Anthropic server answers from the request body alone (never from a queue), so
many sessions can run at once and the same request always gets the same answer:

- a request whose last user turn carries tool results → `tool said: <result text>`;
- user text `calc <a>+<b>` → a `bash` call `echo $((<a>+<b>))`;
- user text `ask <name>` → a call of the custom tool `<name>`;
- user text `slow <seconds>` → an answer streamed over that many seconds;
- otherwise `echo: <text>`, upper-cased when the system prompt contains `SHOUT`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script
from harness import ADMIN_KEY, RunningServer, make_config

from sessiond.runtime.providers.routing import ProviderConfig

MODEL = "claude-sonnet-5-5"


def _system(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    if isinstance(system, list):
        return " ".join(b.get("text", "") for b in system)
    return str(system)


def respond(body: dict[str, Any]) -> Reply:
    """The fake model: a pure function of the request."""
    last = body["messages"][-1]
    content = last["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    results = [b for b in content if b.get("type") == "tool_result"]
    if results:
        inner = results[-1].get("content") or []
        if isinstance(inner, str):
            text = inner
        else:
            text = "".join(b.get("text", "") for b in inner)
        return Reply(text=f"tool said: {text.strip()}")
    text = " ".join(b.get("text", "") for b in content if b.get("type") == "text").strip()
    if text.startswith("calc "):
        expression = text[len("calc ") :]
        return Reply(tool_calls=[("bash", {"command": f"echo $(({expression}))"})])
    if text.startswith("slow "):
        return Reply(text=f"slept on {text[5:]}", chunk_delay_s=float(text[5:]) / 3, chunks=3)
    if text.startswith("ask "):
        return Reply(tool_calls=[(text[len("ask ") :], {"q": "?"})])
    answer = f"echo: {text}"
    if "SHOUT" in _system(body):
        answer = answer.upper()
    return Reply(text=answer)


@contextmanager
def eval_server(tmp_path: Path, **config: object) -> Iterator[tuple[RunningServer, Script]]:
    """A real sessiond whose `claude-*` models are the deterministic fake."""
    script = Script(responder=respond)
    with ThreadedServer(create_app(script)) as fake:
        provider = ProviderConfig(
            name="fake-anthropic", kind="anthropic", models=["claude-*"], base_url=fake.base_url
        )
        running = RunningServer(make_config(tmp_path, providers=[provider], **config))
        running.start()
        try:
            yield running, script
        finally:
            running.stop()


def sdk(server: RunningServer) -> anthropic.Anthropic:
    """The real SDK pointed at `server` with the admin key."""
    return anthropic.Anthropic(base_url=server.base_url, api_key=ADMIN_KEY, max_retries=0)


def http(server: RunningServer) -> httpx.Client:
    """Plain HTTP for our extensions (fork, evals), which the SDK has no methods for."""
    return httpx.Client(base_url=server.base_url, headers={"x-api-key": ADMIN_KEY}, timeout=30)


def toolset_agent(client: anthropic.Anthropic, **overrides: object) -> Any:
    """An agent with the built-in toolset and one custom tool `lookup`."""
    params: dict[str, object] = {
        "name": "evals",
        "model": MODEL,
        "system": "be brief",
        "tools": [
            {"type": "agent_toolset_20260401"},
            {
                "type": "custom",
                "name": "lookup",
                "description": "look something up",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        ],
    }
    params.update(overrides)
    return client.beta.agents.create(**params)  # type: ignore[arg-type]


def wire_events(client: anthropic.Anthropic, session_id: str) -> list[dict[str, Any]]:
    """The session's whole log as wire dicts, in order."""
    return [e.to_dict() for e in client.beta.sessions.events.list(session_id, limit=1000)]


def shape(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with ids replaced by their position and timestamps dropped, so two logs
    compare structurally (written here, not imported from evals, so the tests check it)."""
    position = {e["id"]: f"#{i}" for i, e in enumerate(events)}

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return position.get(value, value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if k not in ("id", "processed_at")}
        return value

    return [walk(e) for e in events]


def wait_run(h: httpx.Client, run_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Poll an eval run until it leaves `running`."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = h.get(f"/v1/evals/{run_id}").json()
        if run["status"] != "running":
            return run  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"eval run {run_id} did not finish")
