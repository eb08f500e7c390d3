"""What a fake provider should answer next: scripted replies shared by both fakes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgspec


class Reply(msgspec.Struct, kw_only=True):
    """A streamed answer: optional text (in chunks) and optional tool calls."""

    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = []
    chunk_delay_s: float = 0.0
    chunks: int = 3
    input_tokens: int = 11
    output_tokens: int = 7


class Fail(msgspec.Struct, kw_only=True):
    """An HTTP error with the provider's real error body."""

    status: int
    message: str = "fake failure"
    retry_after: str | None = None


Step = Reply | Fail


class Script:
    """A queue of steps, and the requests received (thread-safe: the fake runs in a thread)."""

    def __init__(self, responder: Callable[[dict[str, Any]], Step] | None = None) -> None:
        """`responder`, when given, answers each request from its body (deterministic under
        concurrency, where a queue's order is not); queued steps still go first."""
        self.responder = responder
        self._lock = threading.Lock()
        self._steps: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def reset(self) -> None:
        """Forget queued steps and recorded requests (between tests)."""
        with self._lock:
            self._steps.clear()
            self.requests.clear()
            self.headers.clear()

    def push(self, *steps: Step) -> None:
        """Queue answers, in order."""
        with self._lock:
            self._steps.extend(steps)

    def next(self, body: dict[str, Any], headers: dict[str, str]) -> Step:
        """Record a request and take the next answer (a plain "done" when none is queued)."""
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            if self._steps:
                return self._steps.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return Reply(text="done")


def split(text: str, n: int) -> list[str]:
    """`text` in up to `n` non-empty pieces."""
    size = max(1, -(-len(text) // max(1, n)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
