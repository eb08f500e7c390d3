"""An agent answering through a local sessiond, with the unmodified `anthropic` SDK.

With ANTHROPIC_API_KEY set (in the *server's* environment) the agent runs on Claude;
otherwise it uses the built-in `scripted` model, a test double that answers
"You said: …" so the whole loop runs offline.

    sessiond serve                      # in one terminal (prints an API key on first start)
    SESSIOND_API_KEY=<key> python examples/agent_turn.py
"""

from __future__ import annotations

import os

import anthropic


def main() -> None:
    client = anthropic.Anthropic(
        base_url=os.environ.get("SESSIOND_URL", "http://127.0.0.1:8420"),
        api_key=os.environ["SESSIOND_API_KEY"],
    )
    model = "claude-sonnet-5-5" if os.environ.get("ANTHROPIC_API_KEY") else "scripted"
    agent = client.beta.agents.create(
        name="helper",
        model=model,
        system="You are brief.",
        tools=[{"type": "agent_toolset_20260401"}],
    )
    env = client.beta.environments.create(name="local")
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    print(f"session {session.id} on {model}")
    with client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": "Say hello."}]}],
        )
        for event in stream:
            if event.type == "event_delta":
                print(event.delta.content.text, end="", flush=True)
            elif event.type == "agent.message":
                print()
            elif event.type == "session.status_idle":
                print(f"[idle: {event.stop_reason.type}]")
                break
    usage = client.beta.sessions.retrieve(session.id).usage
    print(f"tokens in/out: {usage.input_tokens}/{usage.output_tokens}")


if __name__ == "__main__":
    main()
