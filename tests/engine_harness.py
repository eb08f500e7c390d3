"""Helpers for engine tests: run a turn through the SDK and collect its events."""

from __future__ import annotations

import threading
from typing import Any

import anthropic


def collect_until_idle(
    client: anthropic.Anthropic,
    session_id: str,
    send: list[dict[str, Any]] | None,
    *,
    timeout_s: float = 20,
    stop_on_requires_action: bool = True,
    event_deltas: list[str] | None = None,
    on_event: Any = None,
) -> list[Any]:
    """Open the stream, send `send`, and return every frame up to the turn's idle."""
    received: list[Any] = []
    kwargs: dict[str, Any] = {"timeout": timeout_s}
    if event_deltas:
        kwargs["event_deltas"] = event_deltas
    with client.beta.sessions.events.stream(session_id, **kwargs) as stream:
        if send:
            client.beta.sessions.events.send(session_id, events=send)  # type: ignore[arg-type]
        for event in stream:
            received.append(event)
            if on_event is not None:
                on_event(event)
            if event.type == "session.status_idle":
                reason = event.stop_reason.type  # type: ignore[union-attr]
                if reason != "requires_action" or stop_on_requires_action:
                    break
    return received


def types(events: list[Any]) -> list[str]:
    """The event types, in order."""
    return [e.type for e in events]


def in_thread(fn: Any) -> threading.Thread:
    """Run `fn` in a daemon thread (to act while a stream is being read)."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread
