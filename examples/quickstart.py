"""Create an agent, open a session, send a message and tail the stream, with the real SDK.

Run a server first (`sessiond serve`), then:
    SESSIOND_URL=http://127.0.0.1:8420 SESSIOND_API_KEY=<key> python examples/quickstart.py
"""

from __future__ import annotations

import os

import anthropic


def main() -> None:
    client = anthropic.Anthropic(
        base_url=os.environ.get("SESSIOND_URL", "http://127.0.0.1:8420"),
        api_key=os.environ["SESSIOND_API_KEY"],
    )
    agent = client.beta.agents.create(name="helper", model="claude-sonnet-5-5", system="Be brief.")
    env = client.beta.environments.create(name="local")
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    print("session", session.id, session.status)
    with client.beta.sessions.events.stream(session.id) as stream:
        client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}],
        )
        for event in stream:
            print("live:", event.type, event.id)
            break
    for event in client.beta.sessions.events.list(session.id):
        print("log:", event.type, event.processed_at)


if __name__ == "__main__":
    main()
