"""The `scripted` model: a TEST DOUBLE that plays back a script instead of calling a model.

For offline demos and for users' own CI: it streams the same deltas and returns the same
`ModelResponse` shape as the real adapters, so everything above it runs for real. It is
not a model and knows nothing: with no script it answers every turn with
`You said: <the last user text>`.

A script is a list of steps, played one per call, in order (the last repeats):
    {"text": "Hello", "tool_calls": [{"name": "bash", "input": {"command": "ls"}}],
     "chunk_delay_s": 0.0, "error": {"status": 529, "message": "overloaded"}}
A step `{"crash": "why"}` raises a plain RuntimeError, as a bug in the server would: for
testing that a failing step is retried a bounded number of times, never in a loop.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import msgspec

from sessiond.runtime.providers import base as pb
from sessiond.runtime.providers.errors import from_status
from sessiond.store.clock import new_id


class ScriptedCall(msgspec.Struct, frozen=True):
    """A tool call the script makes."""

    name: str
    input: dict[str, Any] = {}


class ScriptedError(msgspec.Struct, frozen=True):
    """An error the script raises instead of answering."""

    status: int
    message: str = "scripted error"
    retry_after_s: float | None = None


class ScriptStep(msgspec.Struct, frozen=True):
    """One scripted answer."""

    text: str | None = None
    tool_calls: list[ScriptedCall] = []
    chunk_delay_s: float = 0.0
    error: ScriptedError | None = None
    crash: str | None = None
    """Raise RuntimeError(crash): an internal failure, not a provider error."""


def _last_user_text(request: pb.ModelRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            texts = [b.text for b in message.content if isinstance(b, pb.TextBlock)]
            if texts:
                return texts[-1]
    return ""


class ScriptedProvider:
    """Plays back `script`, one step per call."""

    def __init__(self, name: str = "scripted", script: list[ScriptStep] | None = None) -> None:
        self.name = name
        self._script = list(script or [])
        self._calls = 0

    async def complete(
        self, request: pb.ModelRequest, *, on_delta: pb.DeltaCallback | None = None
    ) -> pb.ModelResponse:
        """Answer from the script (or echo, with no script)."""
        if self._script:
            step = self._script[min(self._calls, len(self._script) - 1)]
        else:
            step = ScriptStep(text=f"You said: {_last_user_text(request)}")
        self._calls += 1
        if step.crash is not None:
            raise RuntimeError(step.crash)
        if step.error is not None:
            headers = {}
            if step.error.retry_after_s is not None:
                headers["retry-after"] = str(step.error.retry_after_s)
            raise from_status(self.name, step.error.status, step.error.message, headers)
        content: list[pb.TextBlock | pb.ToolUseBlock] = []
        if step.text:
            words = step.text.split(" ")
            for i, word in enumerate(words):
                if step.chunk_delay_s:
                    await anyio.sleep(step.chunk_delay_s)
                if on_delta is not None:
                    await on_delta(pb.TextDelta(0, word if i == 0 else " " + word))
            content.append(pb.TextBlock(text=step.text))
        for call in step.tool_calls:
            content.append(pb.ToolUseBlock(id=new_id("toolu"), name=call.name, input=call.input))
        output_tokens = len((step.text or "").split()) + len(
            json.dumps([c.input for c in step.tool_calls])
        )
        return pb.ModelResponse(
            content=content,
            stop_reason="tool_use" if step.tool_calls else "end_turn",
            usage=pb.Usage(
                input_tokens=sum(len(m.content) for m in request.messages),
                output_tokens=output_tokens,
            ),
            model=request.model,
        )

    async def close(self) -> None:
        """Nothing to release."""
