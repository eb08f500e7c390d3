"""The turn loop: read the log, ask the planner for the next step, do it, append, repeat.

Every step ends in an append, and the next step is planned from the log again, so a
crash between any two steps resumes exactly where the log says (see `runtime/engine/turns.py`).
A model response is appended atomically (message, tool calls and the span end in one
append), so a log never holds half a response.

Interrupts cancel the drive's scope (see `runtime/engine/supervisor.py`); the supervisor then
calls `close_interrupted` to end the open model request and go idle. A shutdown cancels
too, but writes nothing: the log still says "running", so the next start resumes the turn.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import msgspec

from sessiond.runtime.engine.context import build_request
from sessiond.runtime.engine.deltas import DeltaHub, Preview
from sessiond.runtime.engine.executor import Executors
from sessiond.runtime.engine.pricing import cost_micro_usd, price_of
from sessiond.runtime.engine.turns import (
    MAX_MODEL_REQUESTS_PER_TURN,
    AwaitAction,
    CallModel,
    DenyTools,
    EndTurn,
    RunTools,
    Step,
    plan,
)
from sessiond.runtime.providers import base as pb
from sessiond.runtime.resources.agent_tools import AgentTools, agent_tools
from sessiond.runtime.resources.sessions import KIND, SessionDoc, project_session, session_doc
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import AgentContent, TextBlock
from sessiond.runtime.wire.encoding import decode_stored, encode_body, encode_preview
from sessiond.runtime.wire.error_objects import (
    BillingErrorObject,
    ModelOverloadedErrorObject,
    ModelRateLimitedErrorObject,
    ModelRequestFailedErrorObject,
    RetryStatusExhausted,
    RetryStatusRetrying,
    ToolUseLimitReachedErrorObject,
    UnknownErrorObject,
)
from sessiond.runtime.wire.usage import (
    BudgetLimit,
    MonetaryAmount,
    SessionUsageSnapshot,
    SpanModelUsage,
)
from sessiond.store.clock import new_id
from sessiond.store.errors import AppError, ConflictError, InvalidInputError, UnavailableError
from sessiond.store.protocol import EventQuery, Fence, NewEvent, Store

log = logging.getLogger("sessiond.engine")

MAX_STEPS_PER_DRIVE = 500
_CLOSE_ATTEMPTS = 5
CACHED_EVENTS = 200_000

DeltaCallback = Callable[[pb.TextDelta], Awaitable[None]]
FailureCallback = Callable[[AppError, int, bool, float], Awaitable[None]]
FallbackCallback = Callable[[str, str, str], Awaitable[None]]


class Models(Protocol):
    """Model calls with routing, retries, breaker and fallback (runtime/providers)."""

    async def complete(
        self,
        request: pb.ModelRequest,
        *,
        on_delta: DeltaCallback | None,
        on_attempt_failed: FailureCallback | None,
        on_fallback: FallbackCallback | None,
    ) -> pb.ModelResponse:
        """Complete one request; raises the last AppError when every attempt failed."""
        ...


class ModelSource(Protocol):
    """Which `Models` answer a session's requests: the providers, or (for an eval's
    cassette re-run, `SessionDoc.cassette_of`) a recording (evals/cassette.py)."""

    async def models_for(self, doc: SessionDoc) -> Models:
        """The models for this session's next drive."""
        ...


class LiveModels:
    """The providers for every session; a cassette re-run gets a model that refuses (the
    eval layer brings the cassette: without it, a re-run must never reach a paid model)."""

    def __init__(self, models: Models) -> None:
        self._models = models

    async def models_for(self, doc: SessionDoc) -> Models:
        if doc.cassette_of is not None:
            return _NoCassette()
        return self._models


class _NoCassette:
    async def complete(
        self,
        request: pb.ModelRequest,
        *,
        on_delta: DeltaCallback | None,
        on_attempt_failed: FailureCallback | None,
        on_fallback: FallbackCallback | None,
    ) -> pb.ModelResponse:
        raise InvalidInputError(
            "this session replays a recording, and this process has no cassette source "
            "(evals): no model was called",
            code="cassette_unavailable",
        )


def _error_object(error: AppError, retrying: bool):  # type: ignore[no-untyped-def]
    status = RetryStatusRetrying() if retrying else RetryStatusExhausted()
    cls = {
        "model_rate_limited": ModelRateLimitedErrorObject,
        "model_overloaded": ModelOverloadedErrorObject,
        "circuit_open": ModelOverloadedErrorObject,
    }.get(error.code, ModelRequestFailedErrorObject)
    return cls(message=error.message, retry_status=status)


def _usage(usage: pb.Usage | None) -> SpanModelUsage:
    if usage is None:
        return SpanModelUsage(
            input_tokens=0,
            output_tokens=0,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
        )
    return SpanModelUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
    )


class _DecodedLog:
    """A session's log, decoded, as far as `last_seq`: the log is append-only with
    contiguous seqs, so a read after `last_seq` brings it up to date."""

    __slots__ = ("events", "last_seq", "current")

    def __init__(self) -> None:
        self.events: list[ev.EventBase] = []
        self.last_seq = 0
        self.current = False  # the engine's own append just brought it up to date


class _LogCache:
    """Decoded logs of recently driven sessions, least recently used out first, holding
    at most `max_events` events in all (a turn starts without re-reading its history)."""

    def __init__(self, max_events: int = CACHED_EVENTS) -> None:
        self._logs: OrderedDict[str, _DecodedLog] = OrderedDict()
        self._max_events = max_events
        self._events = 0

    def get(self, session_id: str) -> _DecodedLog:
        log_ = self._logs.get(session_id)
        if log_ is None:
            log_ = self._logs[session_id] = _DecodedLog()
        else:
            self._logs.move_to_end(session_id)
        return log_

    def grew(self, n: int) -> None:
        """`n` events were added to the most recently used log; evict to stay in bound."""
        self._events += n
        while self._events > self._max_events and len(self._logs) > 1:
            _, evicted = self._logs.popitem(last=False)
            self._events -= len(evicted.events)


class Engine:
    """Drives sessions; one `drive` per session at a time (the Supervisor sees to that)."""

    def __init__(
        self,
        store: Store,
        models: ModelSource,
        deltas: DeltaHub,
        executors: Executors,
        *,
        max_model_requests: int = MAX_MODEL_REQUESTS_PER_TURN,
    ) -> None:
        self._store = store
        self._models = models
        self._deltas = deltas
        self._executors = executors
        self._max_model_requests = max_model_requests
        self._logs = _LogCache()
        self._fences: dict[str, Fence] = {}

    def hold(self, session_id: str, fence: Fence) -> None:
        """Every append for this session carries `fence` until `release` (the supervisor's
        lease, with several processes on one database)."""
        self._fences[session_id] = fence

    def release(self, session_id: str) -> None:
        """Appends for this session carry no fence any more."""
        self._fences.pop(session_id, None)

    async def append_fenced(self, session_id: str, events: Sequence[ev.EventBase]) -> None:
        """Append server events for the session under its fence, if it has one."""
        await self._append(session_id, events)

    def _plan(
        self, events: Sequence[ev.EventBase], tools: AgentTools, *, remote: bool = False
    ) -> Step:
        return plan(events, tools=tools, max_model_requests=self._max_model_requests, remote=remote)

    async def _append(
        self, session_id: str, events: Sequence[ev.EventBase], *, planned_at: int | None = None
    ) -> bool:
        """Append `events`. With `planned_at` (the last seq the step was planned from), only
        if nothing else was appended since; False when something was (plan again).

        An append that lands right after the cached log extends it, so the next step plans
        without a read: what comes after it is input the supervisor wakes the engine for.
        """
        new = [NewEvent(type=e.type, data=encode_body(e), id=e.id or None) for e in events]
        try:
            result = await self._store.append(
                session_id,
                new,
                expected_seq=planned_at,
                project=project_session,
                fence=self._fences.get(session_id),
            )
        except ConflictError as exc:
            if planned_at is None or exc.code != "seq_conflict":
                raise
            return False
        cached = self._logs.get(session_id)
        if result.events and result.events[0].seq == cached.last_seq + 1:
            cached.events.extend(decode_stored(s) for s in result.events)
            cached.last_seq = result.last_seq
            cached.current = True
            self._logs.grew(len(result.events))
        return True

    async def _log(self, session_id: str) -> list[ev.EventBase]:
        return [decode_stored(s) for s in await self._store.read(session_id)]

    async def _current(self, session_id: str) -> list[ev.EventBase]:
        """The whole log, read only from where the last step left off (a step costs a
        read of what is new, not of the whole log)."""
        cached = self._logs.get(session_id)
        if cached.current:
            cached.current = False
            return cached.events
        new = await self._store.read(session_id, EventQuery(after_seq=cached.last_seq))
        # Another reader of this cache (a drive and the sweep's `has_work`) may have
        # extended it while this read ran: take only what is still missing.
        fresh = [s for s in new if s.seq > cached.last_seq]
        if fresh:
            cached.events.extend(decode_stored(s) for s in fresh)
            cached.last_seq = fresh[-1].seq
            self._logs.grew(len(fresh))
        return cached.events

    async def drive(self, session_id: str) -> None:
        """Run steps until the session rests or waits on its client."""
        record = await self._store.get_record(KIND, session_id)
        doc = session_doc(record)
        if doc.inert:
            return  # an imported recording: nothing runs until its owner sends to it
        tools = agent_tools(bytes(doc.agent))
        models = await self._models.models_for(doc)
        executor = self._executors.for_session(self_hosted=doc.self_hosted)
        remote = executor.remote
        self._logs.get(session_id).current = False  # input may have come since: read it
        for _ in range(MAX_STEPS_PER_DRIVE):
            events = await self._current(session_id)
            planned_at = self._logs.get(session_id).last_seq
            step = self._plan(events, tools, remote=remote)
            if isinstance(step, CallModel):
                await self._call_model(session_id, doc, tools, events, models, [])
            elif isinstance(step, RunTools):
                if not await self._run_tools(session_id, doc, tools, events, models, step):
                    return
            elif isinstance(step, DenyTools):
                results = [
                    ev.AgentToolResult(
                        tool_use_id=call.id,
                        content=[
                            TextBlock(
                                text=f"This tool call was refused: {reason}"
                                if reason
                                else "The user denied this tool call."
                            )
                        ],
                        is_error=True,
                    )
                    for call, reason in step.calls
                ]
                await self._append(session_id, results)
            elif isinstance(step, AwaitAction):
                if remote:
                    await executor.hand_over(session_id, doc.environment_id, record.workspace_id)
                if not step.already_announced:
                    idle = ev.SessionStatusIdle(
                        stop_reason=ev.RequiresAction(event_ids=step.event_ids)
                    )
                    # Guarded like every idle: input that landed since was not planned for.
                    if not await self._append(session_id, [idle], planned_at=planned_at):
                        continue
                return
            elif isinstance(step, EndTurn):
                closing: list[ev.EventBase] = []
                if step.error is not None:
                    error = ToolUseLimitReachedErrorObject(
                        message=step.error, retry_status=RetryStatusExhausted()
                    )
                    closing.append(ev.SessionError(error=error))
                closing.append(ev.SessionStatusIdle(stop_reason=_stop_reason(step.stop_reason)))
                if not await self._append(session_id, closing, planned_at=planned_at):
                    continue
                return
            else:
                return
        log.error("session %s: step limit reached; ending the turn", session_id)
        stopped = UnknownErrorObject(
            message=f"the engine took {MAX_STEPS_PER_DRIVE} steps in one drive; turn stopped",
            retry_status=RetryStatusExhausted(),
        )
        await self._append(
            session_id,
            [
                ev.SessionError(error=stopped),
                ev.SessionStatusIdle(stop_reason=ev.RetriesExhausted()),
            ],
        )

    async def has_work(self, session_id: str) -> bool:
        """Whether planning the log now gives a step the engine would take."""
        doc = session_doc(await self._store.get_record(KIND, session_id))
        if doc.inert:
            return False
        self._logs.get(session_id).current = False
        remote = self._executors.for_session(self_hosted=doc.self_hosted).remote
        step = self._plan(
            await self._current(session_id), agent_tools(bytes(doc.agent)), remote=remote
        )
        if isinstance(step, AwaitAction):
            return not step.already_announced
        return isinstance(step, CallModel | RunTools | DenyTools | EndTurn)

    async def close_interrupted(self, session_id: str) -> None:
        """After an interrupt: end a model request left open, and go idle."""
        await self.close_turn(session_id, stop_reason=ev.EndTurn())

    async def close_turn(
        self,
        session_id: str,
        *,
        stop_reason: ev.StopReason,
        error: ev.SessionError | None = None,
        even_if_idle: bool = False,
    ) -> None:
        """End the turn from outside a step (an interrupt, a drive that kept failing): end
        any model request left open, log `error` if given, and go idle with `stop_reason`
        (unless the session is idle already and not `even_if_idle`: a dead turn's idle
        also marks the input before it as dealt with)."""
        for _ in range(_CLOSE_ATTEMPTS):
            events = await self._log(session_id)
            ended = {
                e.model_request_start_id for e in events if isinstance(e, ev.SpanModelRequestEnd)
            }
            closing: list[ev.EventBase] = [
                ev.SpanModelRequestEnd(
                    model_request_start_id=e.id, model_usage=_usage(None), is_error=True
                )
                for e in events
                if isinstance(e, ev.SpanModelRequestStart) and e.id not in ended
            ]
            if error is not None:
                closing.append(error)
            # Input sent with or after the interrupt starts the next request at once: an
            # idle here would mark it as dealt with (and a crash would then lose it).
            if even_if_idle or (_status(events) != "idle" and not _input_after_interrupt(events)):
                closing.append(ev.SessionStatusIdle(stop_reason=stop_reason))
            if not closing:
                return
            # Guarded by the seq read, like every idle: input landing meanwhile is re-read.
            if await self._append(session_id, closing, planned_at=len(events)):
                return
        log.error("session %s: could not close the turn: the log kept moving", session_id)

    async def _call_model(
        self,
        session_id: str,
        doc: SessionDoc,
        tools: AgentTools,
        events: list[ev.EventBase],
        models: Models,
        before_start: list[ev.EventBase],
    ) -> None:
        """One model request built from `events` plus `before_start` (events of this step
        not yet appended), opened with one append that also holds `before_start` and, if
        the session was not running, `session.status_running`.

        The opening append is guarded by the seq the request was planned from: input that
        landed meanwhile would sit before the span and count as seen without being sent.
        Then only `before_start` goes in, and the engine plans again.
        """
        planned_at = self._logs.get(session_id).last_seq
        seen = [*events, *before_start]
        running = [] if _status(seen) == "running" else [ev.SessionStatusRunning()]
        request = build_request(tools, seen)
        spent = _spent_micro_usd(seen) if doc.budget is not None else 0
        if doc.budget is not None:
            refusal = _budget_refusal(doc.budget, spent, request.model)
            if refusal is not None:
                # The turn stops before the request: nothing is spent past the budget.
                await self._append(session_id, [*before_start, *refusal])
                return
        start = ev.SpanModelRequestStart(id=new_id("sevt"))
        opening = [*before_start, *running, start]
        if not await self._append(session_id, opening, planned_at=planned_at):
            if before_start:
                await self._append(session_id, before_start)
            return
        events = await self._current(session_id)
        message_id = new_id("sevt")
        started = False

        async def on_delta(delta: pb.TextDelta) -> None:
            nonlocal started
            if not self._deltas.wants(session_id):
                return
            if not started:
                started = True
                body = encode_preview(ev.EventStart(event=ev.AgentMessagePreview(id=message_id)))
                await self._deltas.publish(session_id, Preview(message_id, "agent.message", body))
            body = encode_preview(
                ev.EventDelta(
                    event_id=message_id,
                    delta=ev.ContentDelta(index=delta.index, content=TextBlock(text=delta.text)),
                )
            )
            await self._deltas.publish(session_id, Preview(message_id, "agent.message", body))

        async def on_attempt_failed(
            error: AppError, attempt: int, retrying: bool, delay_s: float
        ) -> None:
            if retrying:
                await self._append(session_id, [ev.SessionError(error=_error_object(error, True))])

        async def on_fallback(from_model: str, to_model: str, reason: str) -> None:
            message = f"model {from_model} unavailable ({reason}); falling back to {to_model}"
            error = UnknownErrorObject(message=message, retry_status=RetryStatusRetrying())
            await self._append(session_id, [ev.SessionError(error=error)])

        try:
            try:
                response = await models.complete(
                    request,
                    on_delta=on_delta,
                    on_attempt_failed=on_attempt_failed,
                    on_fallback=on_fallback,
                )
            finally:
                if started:  # previews still gathered for other processes go out now
                    with anyio.move_on_after(2, shield=True):
                        await self._deltas.flush(session_id, final=True)
        except AppError as error:
            await self._append(
                session_id,
                [
                    ev.SessionError(error=_error_object(error, False)),
                    ev.SpanModelRequestEnd(
                        model_request_start_id=start.id, model_usage=_usage(None), is_error=True
                    ),
                    ev.SessionStatusIdle(stop_reason=ev.RetriesExhausted()),
                ],
            )
            return
        out: list[ev.EventBase] = []
        texts: list[AgentContent] = [
            TextBlock(text=b.text) for b in response.content if isinstance(b, pb.TextBlock)
        ]
        if texts:
            out.append(ev.AgentMessage(id=message_id, content=texts))
        for block in response.content:
            if isinstance(block, pb.ToolUseBlock):
                call = tools.classify(block.name, dict(block.input))
                out.append(msgspec.structs.replace(call, id=new_id("sevt")))
        usage = _usage(response.usage)
        out.append(ev.SpanModelRequestEnd(model_request_start_id=start.id, model_usage=usage))
        if doc.budget is not None:
            cost = cost_micro_usd(response.model or request.model, usage)
            total = spent + (cost or 0)
            out.append(_usage_snapshot(doc.budget, total))
            over = _budget_refusal(doc.budget, total, response.model or request.model)
            if over is not None:
                # This response is kept (it was paid for); the turn ends with it.
                await self._append(session_id, [*out, *over])
                return
        # The turn ends here unless input came meanwhile: end it in the same commit, guarded
        # by the seq the request was planned from (input since then is planned next).
        cached = self._logs.get(session_id)
        stop: ev.StopReason | None = None
        if response.stop_reason == "refusal":
            stop = ev.Refusal()
        elif self._plan([*cached.events, *out], tools) == EndTurn():
            stop = ev.EndTurn()
        if stop is not None:
            ended = [*out, ev.SessionStatusIdle(stop_reason=stop)]
            if await self._append(session_id, ended, planned_at=cached.last_seq):
                return
        await self._append(session_id, out)

    async def _run_tools(
        self,
        session_id: str,
        doc: SessionDoc,
        tools: AgentTools,
        events: list[ev.EventBase],
        models: Models,
        step: RunTools,
    ) -> bool:
        """Run the step's calls in the session's executor, appending each result (the last
        one in one commit with the model request it leads to). False when the session's
        tools cannot run at all: the turn was ended with the reason."""
        executor = self._executors.for_session(self_hosted=doc.self_hosted)

        async def report(progress: Sequence[ev.EventBase]) -> None:
            await self._append(session_id, progress)

        for i, call in enumerate(step.calls):
            try:
                outcome = await executor.run(
                    session_id, doc.environment_id, call.name, dict(call.input), report
                )
            except UnavailableError as exc:
                error = UnknownErrorObject(message=exc.message, retry_status=RetryStatusExhausted())
                idle = ev.SessionStatusIdle(stop_reason=ev.RetriesExhausted())
                await self._append(session_id, [ev.SessionError(error=error), idle])
                return False
            result = ev.AgentToolResult(
                tool_use_id=call.id,
                content=[TextBlock(text=outcome.text)],
                is_error=outcome.is_error,
            )
            last = i == len(step.calls) - 1
            if last and isinstance(self._plan([*events, result], tools), CallModel):
                # The last result and the model call it leads to: one commit.
                await self._call_model(session_id, doc, tools, events, models, [result])
            else:
                await self._append(session_id, [result])
                events = await self._current(session_id)
        return True


def _status(events: Sequence[ev.EventBase]) -> str:
    for event in reversed(events):
        if isinstance(event, ev.SessionStatusRunning):
            return "running"
        if isinstance(event, ev.SessionStatusIdle):
            return "idle"
        if isinstance(event, ev.SessionStatusRescheduled):
            return "rescheduling"
        if isinstance(event, ev.SessionStatusTerminated):
            return "terminated"
    return "idle"


def _input_after_interrupt(events: Sequence[ev.EventBase]) -> bool:
    for event in reversed(events):
        if isinstance(event, ev.UserInterrupt):
            return False
        if isinstance(event, ev.INPUT_EVENTS):
            return True
    return False


def _stop_reason(name: str) -> ev.StopReason:
    if name == "retries_exhausted":
        return ev.RetriesExhausted()
    return ev.EndTurn()


def _spent_micro_usd(events: Sequence[ev.EventBase]) -> int:
    """The session's exact list cost so far: the last `session.usage` that carries it."""
    for event in reversed(events):
        if isinstance(event, ev.SessionUsage) and event.list_cost_micro_usd is not None:
            return event.list_cost_micro_usd
    return 0


def _usage_snapshot(budget: BudgetLimit, total_micro_usd: int) -> ev.SessionUsage:
    """A `session.usage` carrying the list cost (whole cents, rounded up) and its budget."""
    cents = -(-total_micro_usd // 10_000)
    return ev.SessionUsage(
        usage=SessionUsageSnapshot(list_cost=MonetaryAmount(amount=str(cents), currency="USD")),
        budget=budget,
        list_cost_micro_usd=total_micro_usd,
    )


def _budget_refusal(
    budget: BudgetLimit, spent_micro_usd: int, model: str
) -> list[ev.EventBase] | None:
    """The closing events when the budget stops the turn (`budget_reached`), else None."""
    limit_micro_usd = int(budget.max_list_cost.amount) * 10_000
    if price_of(model) is None:
        message = f"model {model!r} has no list price, so the session's budget cannot be kept"
    elif spent_micro_usd >= limit_micro_usd:
        message = (
            f"the session's list cost (${spent_micro_usd / 1_000_000:.6f}) reached its budget "
            f"(${limit_micro_usd / 1_000_000:.2f})"
        )
    else:
        return None
    error = BillingErrorObject(message=message, retry_status=RetryStatusExhausted())
    return [ev.SessionError(error=error), ev.SessionStatusIdle(stop_reason=ev.BudgetReached())]
