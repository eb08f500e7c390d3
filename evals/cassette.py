"""Cassette mode: model responses served from a recorded session's log instead of a model.

A recorded log holds every model request the engine made, implicitly: the request for the
`span.model_request_start` at position i is `build_request(tools, log[:i])` (the context is
a pure fold), and its response is what the engine appended with the matching
`span.model_request_end`. A cassette rebuilds those pairs and answers a new request with
the recorded response when the request is the same, ids aside (tool-use ids are event
ids, fresh in every run, so they are compared by order of appearance).

A request the recording never saw is a *cassette miss*: the engine logs it as a failed
model request whose message starts with `cassette miss:` and says where the request first
differs from the closest recorded one. Re-running a recording in cassette mode is how an
engine change is tested: the same responses must produce the same log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sessiond.runtime.engine.context import build_request
from sessiond.runtime.engine.loop import Models
from sessiond.runtime.providers import base as pb
from sessiond.runtime.resources.agent_tools import AgentTools, agent_tools
from sessiond.runtime.resources.sessions import KIND, SessionDoc, session_doc
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import TextBlock
from sessiond.runtime.wire.encoding import decode_stored
from sessiond.store.errors import AppError, InvalidInputError
from sessiond.store.protocol import Store

MISS_PREFIX = "cassette miss:"

_TOOL_CALLS = (ev.AgentToolUse, ev.AgentCustomToolUse, ev.AgentMCPToolUse)


class CassetteMissError(InvalidInputError):
    """The recording has no response for this request (never retried)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{MISS_PREFIX} {detail}", code="cassette_miss")


def request_key(request: pb.ModelRequest) -> bytes:
    """The request as canonical JSON, with tool-use ids replaced by their order."""
    ids: dict[str, str] = {}

    def norm(value: str) -> str:
        return ids.setdefault(value, f"#{len(ids)}")

    messages: list[Any] = []
    for message in request.messages:
        blocks: list[Any] = []
        for block in message.content:
            if isinstance(block, pb.ToolUseBlock):
                block = msgspec.structs.replace(block, id=norm(block.id))
            elif isinstance(block, pb.ToolResultBlock):
                block = msgspec.structs.replace(block, tool_use_id=norm(block.tool_use_id))
            blocks.append(block)
        messages.append({"role": message.role, "content": blocks})
    body = {
        "model": request.model,
        "system": request.system,
        "tools": request.tools,
        "max_tokens": request.max_tokens,
        "messages": messages,
    }
    return msgspec.json.encode(body, order="sorted")


def _response(events: Sequence[ev.EventBase], start_index: int) -> pb.ModelResponse | None:
    """What the engine appended for the model request starting at `start_index`."""
    start = events[start_index]
    content: list[pb.TextBlock | pb.ToolUseBlock] = []
    texts: list[pb.TextBlock] = []
    for position in range(start_index + 1, len(events)):
        event = events[position]
        if isinstance(event, ev.AgentMessage):
            texts.extend(
                pb.TextBlock(text=block.text)
                for block in event.content
                if isinstance(block, TextBlock)
            )
        elif isinstance(event, _TOOL_CALLS):
            content.append(pb.ToolUseBlock(id=event.id, name=event.name, input=dict(event.input)))
        elif isinstance(event, ev.SpanModelRequestEnd) and event.model_request_start_id == start.id:
            if event.is_error:
                return None
            usage = event.model_usage
            calls = bool(content)
            after = events[position + 1] if position + 1 < len(events) else None
            refused = isinstance(after, ev.SessionStatusIdle) and isinstance(
                after.stop_reason, ev.Refusal
            )
            return pb.ModelResponse(
                content=[*texts, *content],
                stop_reason="refusal" if refused else "tool_use" if calls else "end_turn",
                usage=pb.Usage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_input_tokens=usage.cache_read_input_tokens,
                    cache_creation_input_tokens=usage.cache_creation_input_tokens,
                ),
                model="",
            )
    return None


class Cassette:
    """Recorded (request → response) pairs of one session; answers like a `Models`."""

    def __init__(self, source_session_id: str, tools: AgentTools, events: Sequence[ev.EventBase]):
        self.source_session_id = source_session_id
        self._pairs: dict[bytes, list[pb.ModelResponse]] = {}
        self._served: dict[bytes, int] = {}
        self._requests: list[pb.ModelRequest] = []
        events = list(events)
        for index, event in enumerate(events):
            if not isinstance(event, ev.SpanModelRequestStart):
                continue
            response = _response(events, index)
            if response is None:
                continue
            request = build_request(tools, events[:index])
            self._requests.append(request)
            self._pairs.setdefault(request_key(request), []).append(response)

    def __len__(self) -> int:
        return sum(len(r) for r in self._pairs.values())

    async def complete(
        self,
        request: pb.ModelRequest,
        *,
        on_delta: Any = None,
        on_attempt_failed: Any = None,
        on_fallback: Any = None,
    ) -> pb.ModelResponse:
        """The recorded response to this request (the n-th for its n-th occurrence)."""
        key = request_key(request)
        responses = self._pairs.get(key)
        if not responses:
            raise CassetteMissError(self._explain(request))
        served = self._served.get(key, 0)
        self._served[key] = served + 1
        response = responses[min(served, len(responses) - 1)]
        if on_delta is not None:
            for index, block in enumerate(response.content):
                if isinstance(block, pb.TextBlock):
                    await on_delta(pb.TextDelta(index, block.text))
        return msgspec.structs.replace(response, model=request.model)

    def _explain(self, request: pb.ModelRequest) -> str:
        """Where the request first differs from the closest recorded one."""
        source = f"session {self.source_session_id} recorded no response for this request"
        if not self._requests:
            return f"{source} (it made no successful model requests)"
        best, best_common = self._requests[0], -1
        for recorded in self._requests:
            common = _common_messages(recorded, request)
            if common > best_common:
                best, best_common = recorded, common
        if best.model != request.model:
            return f"{source}: model {request.model!r}, recorded {best.model!r}"
        if best.system != request.system:
            return f"{source}: the system prompt differs"
        if request_key(msgspec.structs.replace(best, messages=[])) != request_key(
            msgspec.structs.replace(request, messages=[])
        ):
            return f"{source}: the tools or max_tokens differ"
        return f"{source}: messages differ from message {best_common} on"


def _common_messages(a: pb.ModelRequest, b: pb.ModelRequest) -> int:
    count = 0
    for left, right in zip(a.messages, b.messages, strict=False):
        one = pb.ModelRequest(model="", system=None, messages=[left])
        two = pb.ModelRequest(model="", system=None, messages=[right])
        if request_key(one) != request_key(two):
            break
        count += 1
    return count


class CassetteModels:
    """The engine's model source (runtime/engine/loop.py `ModelSource`) in a process that runs
    evals: a cassette re-run gets its recording, every other session the providers."""

    def __init__(self, store: Store, live: Models) -> None:
        self._store = store
        self._live = live

    async def models_for(self, doc: SessionDoc) -> Models:
        if doc.cassette_of is None:
            return self._live
        return await self._cassette(doc.cassette_of)

    async def _cassette(self, source_session_id: str) -> Cassette:
        """Responses recorded in another session's log (an empty cassette if it is gone)."""
        try:
            source = session_doc(await self._store.get_record(KIND, source_session_id))
            events = [decode_stored(s) for s in await self._store.read(source_session_id)]
        except AppError:
            return Cassette(source_session_id, agent_tools(b"{}"), [])
        return Cassette(source_session_id, agent_tools(bytes(source.agent)), events)
