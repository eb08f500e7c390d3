"""Running one case: a real session, driven turn by turn, then scored.

Every case run is an ordinary session (created through `SessionService`, driven by the
engine like any other), tagged with `eval_run` / `eval_case` metadata so it can be found,
opened, replayed and forked afterwards. The runner only plays the client: it sends each
turn, waits for the session to rest, answers `requires_action` from the plan, and scores
the log once the last turn rests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

from sessiond.evals.cassette import MISS_PREFIX
from sessiond.evals.plan import AnswerBook, CasePlan
from sessiond.evals.results import CaseResult, CaseStatus, ScoreResult
from sessiond.evals.scorers import ScoreContext, decode_scorers, score_all
from sessiond.evals.transcript import build_transcript
from sessiond.runtime.engine.pricing import cost_usd
from sessiond.runtime.resources.sessions import KIND, CreateSession, SessionService, session_doc
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.encoding import decode_stored
from sessiond.runtime.wire.params import SendEvents
from sessiond.runtime.wire.usage import SpanModelUsage
from sessiond.store.clock import new_id
from sessiond.store.errors import AppError
from sessiond.store.protocol import EventQuery, Store

_encode = msgspec.json.encode
_RESTING = (ev.SessionStatusIdle, ev.SessionStatusTerminated)
INTERRUPT_WAIT_S = 5.0


class AgentRef(msgspec.Struct, frozen=True, kw_only=True):
    """Which agent version a case runs on; `id=None` means the recorded session's own
    pinned snapshot (re-runs only)."""

    id: str | None
    version: int | None


class CaseRun(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one case run needs besides the services."""

    run_id: str
    workspace_id: str
    plan: CasePlan
    agent: AgentRef
    repeat: int
    environment_id: str
    cassette: bool = False
    timeout_s: float = 300.0
    extra_scorers: list[dict[str, Any]] = []
    """The run's own scorers, applied after the case's."""


async def wait_rest(store: Store, session_id: str, after_seq: int) -> tuple[ev.EventBase, int]:
    """The first idle/terminated status after `after_seq`, and its seq (woken by commits)."""
    async with store.watch(session_id) as watch:
        cursor = after_seq
        while True:
            for stored in await store.read(session_id, EventQuery(after_seq=cursor)):
                cursor = stored.seq
                if stored.type in ("session.status_idle", "session.status_terminated"):
                    return decode_stored(stored), cursor
            await watch.wait(cursor)


class CaseRunner:
    """Plays the client of one case session at a time (many run concurrently)."""

    def __init__(self, store: Store, sessions: SessionService, scoring: ScoreContext) -> None:
        self._store = store
        self._sessions = sessions
        self._scoring = scoring

    async def run(self, case: CaseRun, on_session: Callable[[str], Awaitable[None]]) -> CaseResult:
        """Run the case to its end; returns its result (never raises for a case failure).

        `on_session` is told the session id as soon as it exists, so a cancel can reach it.
        """
        session_id = await self._create(case)
        await on_session(session_id)
        started = time.monotonic()
        problem: tuple[CaseStatus, str] | None = None
        try:
            with anyio.fail_after(case.timeout_s):
                problem = await self._drive(case, session_id)
        except TimeoutError:
            await self.interrupt(case.workspace_id, session_id)
            problem = ("error", f"timed out after {case.timeout_s:g}s")
        except AppError as exc:
            problem = ("error", f"{exc.code}: {exc.message}")
        latency = time.monotonic() - started
        return await self._result(case, session_id, latency, problem)

    async def interrupt(self, workspace_id: str, session_id: str) -> None:
        """Stop a case session and wait (briefly) for it to rest; used on cancel and timeout."""
        with anyio.move_on_after(INTERRUPT_WAIT_S, shield=True):
            try:
                sent = await self._sessions.send(
                    workspace_id, session_id, _send([{"type": "user.interrupt"}])
                )
                record = session_doc(await self._store.get_record(KIND, session_id))
                if record.state.status in ("running", "rescheduling"):
                    await wait_rest(self._store, session_id, sent.last_seq)
            except AppError:
                pass

    async def _create(self, case: CaseRun) -> str:
        plan = case.plan
        metadata = {
            **dict(list(plan.metadata.items())[:12]),
            "eval_run": case.run_id,
            "eval_case": plan.case_id[:512],
            "eval_repeat": str(case.repeat),
        }
        snapshot: bytes | None = None
        if case.agent.id is None:
            if plan.source_session_id is None:
                raise AppError("a suite case needs an agent", code="agent_required")
            source = await self._store.get_record(KIND, plan.source_session_id)
            snapshot = bytes(session_doc(source).agent)
            agent_ref = msgspec.json.decode(snapshot)["id"]
        else:
            agent_ref = {"type": "agent", "id": case.agent.id, "version": case.agent.version}
        params = CreateSession(
            agent=msgspec.Raw(_encode(agent_ref)),
            environment_id=case.environment_id,
            metadata=metadata,
            title=f"eval {case.run_id} · {plan.case_id} · #{case.repeat}",
        )
        session = await self._sessions.create(
            case.workspace_id,
            params,
            cassette_of=plan.source_session_id if case.cassette else None,
            snapshot=snapshot,
        )
        return session.id

    async def _drive(self, case: CaseRun, session_id: str) -> tuple[CaseStatus, str] | None:
        book = AnswerBook(case.plan)
        for turn in case.plan.turns:
            sent = await self._sessions.send(case.workspace_id, session_id, _send(turn))
            cursor = sent.last_seq
            while True:
                rest, cursor = await wait_rest(self._store, session_id, cursor)
                stop = getattr(rest, "stop_reason", None)
                if not isinstance(stop, ev.RequiresAction):
                    break
                calls = {
                    e.id: e
                    for e in (decode_stored(s) for s in await self._store.read(session_id))
                    if e.id in stop.event_ids
                }
                try:
                    answers = [book.answer(calls[event_id]) for event_id in stop.event_ids]
                except LookupError as exc:
                    await self.interrupt(case.workspace_id, session_id)
                    return "error", str(exc)
                sent = await self._sessions.send(case.workspace_id, session_id, _send(answers))
                cursor = sent.last_seq
            if isinstance(rest, ev.SessionStatusTerminated):
                return "error", "the session was terminated"
            if not isinstance(stop, ev.EndTurn):
                return await self._failure(session_id, stop)
        return None

    async def _failure(self, session_id: str, stop: object) -> tuple[CaseStatus, str]:
        """Why a turn ended other than with `end_turn` (the last session.error says)."""
        errors = [
            decode_stored(s)
            for s in await self._store.read(
                session_id, EventQuery(types=frozenset({"session.error"}), descending=True, limit=1)
            )
        ]
        message = getattr(getattr(errors[0], "error", None), "message", "") if errors else ""
        if message.startswith(MISS_PREFIX):
            return "cassette_miss", message
        kind = type(stop).__struct_config__.tag if isinstance(stop, msgspec.Struct) else "?"
        return "error", f"the turn ended with {kind}" + (f": {message}" if message else "")

    async def _result(
        self,
        case: CaseRun,
        session_id: str,
        latency: float,
        problem: tuple[CaseStatus, str] | None,
    ) -> CaseResult:
        record = session_doc(await self._store.get_record(KIND, session_id))
        agent = msgspec.json.decode(record.agent)
        model = agent["model"]["id"] if isinstance(agent.get("model"), dict) else agent["model"]
        events = [decode_stored(s) for s in await self._store.read(session_id)]
        transcript = build_transcript(events, model=model)
        scores: list[ScoreResult] = []
        status: CaseStatus
        if problem is None:
            specs = decode_scorers(
                [*case.plan.scorers, *case.extra_scorers],
                python_modules=self._scoring.python_modules,
            )
            scores = await score_all(specs, transcript, self._scoring)
            status = "passed" if all(s.passed for s in scores) else "failed"
            await self._record_outcomes(session_id, events, scores)
        else:
            status = problem[0]
        mean = sum(s.score for s in scores) / len(scores) if scores else 0.0
        if problem is None and not scores:
            mean = 1.0
        return CaseResult(
            run_id=case.run_id,
            case_id=case.plan.case_id,
            agent_id=str(agent["id"]),
            agent_version=int(agent["version"]),
            repeat=case.repeat,
            session_id=session_id,
            status=status,
            scores=scores,
            score=mean,
            input_tokens=transcript.input_tokens,
            output_tokens=transcript.output_tokens,
            cost_usd=cost_usd(
                model,
                transcript.input_tokens,
                transcript.output_tokens,
                self._scoring.pricing,
            ),
            latency_s=round(latency, 6),
            turns=transcript.turns,
            error=problem[1] if problem else None,
            source_session_id=case.plan.source_session_id,
        )

    async def _record_outcomes(
        self, session_id: str, events: Sequence[ev.EventBase], scores: Sequence[ScoreResult]
    ) -> None:
        """Grade the session's defined outcomes with the case's verdict, in its own log."""
        outcomes = [e for e in events if isinstance(e, ev.UserDefineOutcome)]
        if not outcomes:
            return
        passed = all(s.passed for s in scores)
        explanation = "; ".join(f"{s.scorer}: {s.detail}" for s in scores)[:4000]
        spans: list[ev.EventBase] = []
        for outcome in outcomes:
            start = ev.SpanOutcomeEvaluationStart(
                id=new_id("sevt"), iteration=0, outcome_id=outcome.outcome_id
            )
            spans.append(start)
            spans.append(
                ev.SpanOutcomeEvaluationEnd(
                    explanation=explanation or ("passed" if passed else "failed"),
                    iteration=0,
                    outcome_evaluation_start_id=start.id,
                    outcome_id=outcome.outcome_id,
                    result="satisfied" if passed else "failed",
                    usage=SpanModelUsage(
                        input_tokens=0,
                        output_tokens=0,
                        cache_creation_input_tokens=0,
                        cache_read_input_tokens=0,
                    ),
                )
            )
        await self._sessions.append_system(session_id, spans)


def _send(events: Sequence[dict[str, Any]]) -> SendEvents:
    return SendEvents(events=[msgspec.Raw(_encode(e)) for e in events])
