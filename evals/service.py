"""Eval runs as a resource: a record for the run, and a stream for its progress.

A run is stored like a session: a record (kind `eval_run`) holding its spec and counts,
and an append-only stream of `eval.*` events that the record is projected from. Progress
is therefore streamed, listed and resumed exactly like a session's events, and a run's
results are its `eval.case_finished` events. Runs execute as children of the app's task
group; a restart resumes unfinished runs (finished cases are not run again).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from sessiond.evals.plan import CasePlan, plan_from_log
from sessiond.evals.results import CaseResult
from sessiond.evals.runner import AgentRef, CaseRun, CaseRunner
from sessiond.evals.scorers import ScoreContext, decode_scorers
from sessiond.evals.suite import parse_suite
from sessiond.runtime.engine.loop import Models
from sessiond.runtime.engine.pricing import Price
from sessiond.runtime.limits import Limits, Title, VersionNumber
from sessiond.runtime.resources.agent_config import check_metadata
from sessiond.runtime.resources.agents import AgentService
from sessiond.runtime.resources.environments import CreateEnvironment, EnvironmentService
from sessiond.runtime.resources.records import owned_record
from sessiond.runtime.resources.sessions import KIND as SESSION_KIND
from sessiond.runtime.resources.sessions import SessionService, session_doc
from sessiond.runtime.wire.encoding import decode_stored
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import InvalidInputError, UnavailableError
from sessiond.store.protocol import NewEvent, Record, RecordQuery, Store, StoredEvent

log = logging.getLogger("sessiond.evals")

KIND = "eval_run"
RunStatus = Literal["running", "completed", "cancelled", "failed"]
_ENV_NAME = "sessiond-evals"


class SessionSelection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Recorded sessions to re-run: by id, or by filter (ids win when both are given)."""

    session_ids: list[str] = []
    agent_id: str | None = None
    agent_version: VersionNumber | None = None
    created_gte: str | None = None
    created_lte: str | None = None
    metadata: dict[str, str] = {}
    """Every pair must be in the session's metadata."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class StartEval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/evals` body (our extension)."""

    suite: dict[str, Any] | None = None
    """A suite inline (the JSON form of a suite file)."""
    suite_from: str | None = None
    """Reuse the suite (cases and scorers) of an earlier eval run, by its id."""
    sessions: SessionSelection | None = None
    """Re-run recorded sessions instead of a suite."""
    agent_id: str | None = None
    versions: list[VersionNumber] = []
    """Agent versions to run every case on; empty: the latest (suite) or, for re-runs
    without `agent_id`, each recording's own pinned snapshot."""
    repeats: int | None = None
    concurrency: int = 4
    cassette: bool = False
    """Re-runs only: serve model responses from the recording (see evals/cassette.py)."""
    environment_id: str | None = None
    scorers: list[dict[str, Any]] = []
    """Applied to every case, after the case's own."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    grader_model: str | None = None
    title: Title | None = None
    metadata: dict[str, str] = {}


class Counts(msgspec.Struct, kw_only=True):
    """How far a run is."""

    total: int = 0
    started: int = 0
    finished: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    cancelled: int = 0
    cassette_misses: int = 0


class RunDoc(msgspec.Struct, kw_only=True):
    """What the run record stores."""

    id: str
    title: str | None
    status: RunStatus
    agents: list[AgentRef]
    plans: list[CasePlan]
    scorers: list[dict[str, Any]]
    concurrency: int
    cassette: bool
    environment_id: str
    timeout_s: float
    grader_model: str | None
    pricing: dict[str, Price] = {}
    metadata: dict[str, str] = {}
    counts: Counts
    created_at: str
    completed_at: str | None = None
    error: str | None = None


class EvalRun(msgspec.Struct, kw_only=True):
    """The wire object of an eval run."""

    id: str
    title: str | None
    status: RunStatus
    agents: list[AgentRef]
    case_ids: list[str]
    concurrency: int
    cassette: bool
    environment_id: str
    counts: Counts
    metadata: dict[str, str]
    created_at: str
    updated_at: str
    completed_at: str | None
    error: str | None
    results: list[CaseResult] | None = None
    type: str = "eval_run"


class CaseStarted(msgspec.Struct, kw_only=True, tag="eval.case_started", tag_field="type"):
    case_id: str
    agent_version: int | None
    repeat: int
    session_id: str


class CaseFinished(msgspec.Struct, kw_only=True, tag="eval.case_finished", tag_field="type"):
    result: CaseResult
    requested_version: int | None = None
    """The version the run asked for (None: the recording's own snapshot)."""


class RunFinished(msgspec.Struct, kw_only=True, tag="eval.run_finished", tag_field="type"):
    status: RunStatus
    counts: Counts
    error: str | None = None


class RunStarted(msgspec.Struct, kw_only=True, tag="eval.run_started", tag_field="type"):
    total: int


RunEvent = RunStarted | CaseStarted | CaseFinished | RunFinished
_decode_event = msgspec.json.Decoder(RunEvent).decode
_decode_doc = msgspec.json.Decoder(RunDoc).decode
_encode = msgspec.json.encode


def _new(event: RunEvent) -> NewEvent:
    return NewEvent(type=event.__struct_config__.tag, data=_encode(event))  # type: ignore[arg-type]


def project_run(record: Record, stored: Sequence[StoredEvent]) -> Record:
    """Fold progress events into the run record (inside the append transaction)."""
    doc = _decode_doc(record.data)
    counts = doc.counts
    for s in stored:
        event = _decode_event(s.data)
        if isinstance(event, RunStarted):
            counts.total = event.total
        elif isinstance(event, CaseStarted):
            counts.started += 1
        elif isinstance(event, CaseFinished):
            counts.finished += 1
            status = event.result.status
            if status == "passed":
                counts.passed += 1
            elif status == "failed":
                counts.failed += 1
            elif status == "cancelled":
                counts.cancelled += 1
            elif status == "cassette_miss":
                counts.cassette_misses += 1
            else:
                counts.errors += 1
        elif isinstance(event, RunFinished):
            doc.status = event.status
            doc.error = event.error
            doc.completed_at = s.recorded_at
    return msgspec.structs.replace(
        record,
        data=_encode(doc),
        tags={**record.tags, "status": doc.status},
        updated_at=stored[-1].recorded_at if stored else record.updated_at,
    )


def to_run(record: Record, results: list[CaseResult] | None = None) -> EvalRun:
    """The wire object for a run record."""
    doc = _decode_doc(record.data)
    return EvalRun(
        id=doc.id,
        title=doc.title,
        status=doc.status,
        agents=doc.agents,
        case_ids=[p.case_id for p in doc.plans],
        concurrency=doc.concurrency,
        cassette=doc.cassette,
        environment_id=doc.environment_id,
        counts=doc.counts,
        metadata=doc.metadata,
        created_at=doc.created_at,
        updated_at=record.updated_at,
        completed_at=doc.completed_at,
        error=doc.error,
        results=results,
    )


class EvalService:
    """Start, list, retrieve and cancel eval runs; replays live in `evals/replay.py`."""

    def __init__(
        self,
        store: Store,
        sessions: SessionService,
        agents: AgentService,
        environments: EnvironmentService,
        models: Models | None,
        *,
        limits: Limits | None = None,
        python_modules: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._agents = agents
        self._environments = environments
        self._models = models
        self._limits = limits or Limits()
        self._python_modules = python_modules
        """Where `python` scorers sent over HTTP may come from (the operator's allow-list)."""
        self._tg: TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._done: dict[str, anyio.Event] = {}

    # -- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the task group runs execute in; resume unfinished runs first."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await self._recover()
            task_status.started()
            await anyio.sleep_forever()

    async def _recover(self) -> None:
        query = RecordQuery(
            kind=KIND,
            workspace_id=None,
            tags={"status": frozenset({"running"})},
            include_archived=True,
            limit=1000,
        )
        for record in await self._store.list_records(query):
            log.info("eval run %s: resumed after a restart", record.id)
            self._launch(record.workspace_id, record.id)

    def _launch(self, workspace_id: str, run_id: str) -> None:
        if self._tg is None:
            raise RuntimeError("the eval service is not running")
        self._done[run_id] = anyio.Event()
        self._tg.start_soon(self._execute, workspace_id, run_id)

    # -- resource --------------------------------------------------------------

    async def start(self, workspace_id: str, params: StartEval) -> EvalRun:
        """Validate everything, write the run, then start it (nothing is written on a 400)."""
        if self._tg is None:
            raise UnavailableError(
                "eval runs need the engine, which this server does not run (SESSIOND_RUN_ENGINE)",
                code="engine_not_running",
            )
        if not 1 <= params.concurrency <= 64:
            raise InvalidInputError("concurrency: must be between 1 and 64")
        if params.repeats is not None and not 1 <= params.repeats <= 100:
            raise InvalidInputError("repeats: must be between 1 and 100")
        check_metadata(params.metadata)
        sources = [params.suite is not None, params.suite_from is not None, bool(params.sessions)]
        if sum(sources) != 1:
            raise InvalidInputError("give exactly one of suite, suite_from and sessions")
        extra = list(params.scorers)
        decode_scorers(extra, python_modules=self._python_modules)
        pricing: dict[str, Price] = {}
        suite_agent: str | None = None
        if params.sessions is not None:
            if params.cassette and params.versions and not params.agent_id:
                raise InvalidInputError("versions: needs agent_id")
            plans = await self._recorded_plans(workspace_id, params.sessions, params, extra)
            extra = []
        elif params.suite_from is not None:
            earlier = _decode_doc((await self._record(workspace_id, params.suite_from)).data)
            plans, pricing = earlier.plans, earlier.pricing
            extra = [*earlier.scorers, *extra]
            suite_agent = earlier.agents[0].id if earlier.agents else None
        else:
            assert params.suite is not None
            suite = parse_suite(params.suite, python_modules=self._python_modules)
            plans = [_plan_from_case(case, suite) for case in suite.cases]
            pricing = dict(getattr(suite, "pricing", None) or {})
            suite_agent = getattr(suite, "agent", None)
        if params.cassette and params.sessions is None:
            raise InvalidInputError("cassette: only re-runs of recorded sessions have a cassette")
        if params.repeats is not None:
            plans = [msgspec.structs.replace(p, repeats=params.repeats) for p in plans]
        if not plans:
            raise InvalidInputError("the run has no cases", code="no_cases")
        agents = await self._agent_refs(workspace_id, params, suite_agent)
        total = sum(p.repeats for p in plans) * len(agents)
        if total > self._limits.max_eval_cases:
            raise InvalidInputError(
                f"the run has {total} case runs (cases x versions x repeats); this server "
                f"allows at most {self._limits.max_eval_cases} (SESSIOND_MAX_EVAL_CASES)",
                code="too_many_cases",
            )
        environment_id = params.environment_id or await self._environment(workspace_id, plans)
        await self._environments.require_usable(workspace_id, environment_id)
        now = now_ts()
        doc = RunDoc(
            id=new_id("evrun"),
            title=params.title,
            status="running",
            agents=agents,
            plans=plans,
            scorers=extra,
            concurrency=params.concurrency,
            cassette=params.cassette,
            environment_id=environment_id,
            timeout_s=params.timeout_s,
            grader_model=params.grader_model,
            pricing=pricing,
            metadata=params.metadata,
            counts=Counts(total=total),
            created_at=now,
        )
        record = Record(
            kind=KIND,
            id=doc.id,
            workspace_id=workspace_id,
            data=_encode(doc),
            created_at=now,
            updated_at=now,
            tags={"status": "running"},
        )
        result = await self._store.create_stream(
            record, [_new(RunStarted(total=total))], project=project_run
        )
        assert result.record is not None
        self._launch(workspace_id, doc.id)
        return to_run(result.record)

    async def _record(self, workspace_id: str, run_id: str) -> Record:
        return await owned_record(self._store, KIND, run_id, workspace_id)

    async def retrieve(self, workspace_id: str, run_id: str, *, results: bool = True) -> EvalRun:
        """A run, with its results so far."""
        record = await self._record(workspace_id, run_id)
        return to_run(record, await self.results(run_id) if results else None)

    async def results(self, run_id: str) -> list[CaseResult]:
        """The run's case results, in the order they finished."""
        stored = await self._store.read(run_id)
        out = []
        for s in stored:
            if s.type == "eval.case_finished":
                event = _decode_event(s.data)
                assert isinstance(event, CaseFinished)
                out.append(event.result)
        return out

    async def list(self, query: RecordQuery) -> list[EvalRun]:
        """A page of runs (without results)."""
        return [to_run(r) for r in await self._store.list_records(query)]

    async def cancel(self, workspace_id: str, run_id: str) -> EvalRun:
        """Stop a run: cases in flight are interrupted and recorded as cancelled."""
        record = await self._record(workspace_id, run_id)
        if _decode_doc(record.data).status != "running":
            return to_run(record, await self.results(run_id))
        scope = self._scopes.get(run_id)
        if scope is not None:
            scope.cancel()
            with anyio.move_on_after(30):
                await self._done[run_id].wait()
        else:
            # Not running in this process (it was left behind): settle it here.
            doc = _decode_doc(record.data)
            await self._append(run_id, RunFinished(status="cancelled", counts=doc.counts))
        return await self.retrieve(workspace_id, run_id)

    # -- execution -------------------------------------------------------------

    async def _append(self, run_id: str, event: RunEvent) -> None:
        await self._store.append(run_id, [_new(event)], expected_seq=None, project=project_run)

    async def _execute(self, workspace_id: str, run_id: str) -> None:
        done = self._done[run_id]
        try:
            await self._execute_cases(workspace_id, run_id)
        except Exception as exc:
            log.exception("eval run %s failed", run_id)
            with anyio.CancelScope(shield=True):
                doc = _decode_doc((await self._store.get_record(KIND, run_id)).data)
                await self._append(
                    run_id,
                    RunFinished(
                        status="failed", counts=doc.counts, error=f"{type(exc).__name__}: {exc}"
                    ),
                )
        finally:
            self._scopes.pop(run_id, None)
            done.set()

    async def _execute_cases(self, workspace_id: str, run_id: str) -> None:
        doc = _decode_doc((await self._store.get_record(KIND, run_id)).data)
        finished: set[tuple[str, int | None, int]] = set()
        started: dict[tuple[str, int | None, int], str] = {}
        for s in await self._store.read(run_id):
            event = _decode_event(s.data)
            if isinstance(event, CaseFinished):
                key = (event.result.case_id, event.requested_version, event.result.repeat)
                finished.add(key)
                started.pop(key, None)
            elif isinstance(event, CaseStarted):
                started[(event.case_id, event.agent_version, event.repeat)] = event.session_id
        orphans = list(started.values())
        runner = CaseRunner(
            self._store,
            self._sessions,
            ScoreContext(
                models=self._models,
                pricing=doc.pricing,
                grader_model=doc.grader_model,
                python_modules=self._python_modules,
            ),
        )
        for session_id in orphans:  # cases cut off by a restart run again from the start
            await runner.interrupt(workspace_id, session_id)
        limiter = anyio.CapacityLimiter(doc.concurrency)

        async def one(agent: AgentRef, plan: CasePlan, repeat: int) -> None:
            async with limiter:
                case = CaseRun(
                    run_id=run_id,
                    workspace_id=workspace_id,
                    plan=plan,
                    agent=agent,
                    repeat=repeat,
                    environment_id=doc.environment_id,
                    cassette=doc.cassette,
                    timeout_s=doc.timeout_s,
                    extra_scorers=doc.scorers,
                )
                session: list[str] = []

                async def on_session(session_id: str) -> None:
                    session.append(session_id)
                    await self._append(
                        run_id,
                        CaseStarted(
                            case_id=plan.case_id,
                            agent_version=agent.version,
                            repeat=repeat,
                            session_id=session_id,
                        ),
                    )

                try:
                    result = await runner.run(case, on_session)
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        if session:
                            await runner.interrupt(workspace_id, session[0])
                        await self._append(run_id, CaseFinished(result=_cancelled(case, session)))
                    raise
                except Exception as exc:  # a bug in one case must not sink the run
                    log.exception("eval run %s: case %s failed", run_id, plan.case_id)
                    result = msgspec.structs.replace(
                        _cancelled(case, session),
                        status="error",
                        error=f"internal error: {type(exc).__name__}: {exc}",
                    )
                await self._append(run_id, CaseFinished(result=result))

        with anyio.CancelScope() as scope:
            self._scopes[run_id] = scope
            async with anyio.create_task_group() as tg:
                for agent in doc.agents:
                    for plan in doc.plans:
                        for repeat in range(plan.repeats):
                            if (plan.case_id, agent.version, repeat) in finished:
                                continue
                            tg.start_soon(one, agent, plan, repeat)
        with anyio.CancelScope(shield=True):
            doc = _decode_doc((await self._store.get_record(KIND, run_id)).data)
            status: RunStatus = "cancelled" if scope.cancelled_caught else "completed"
            await self._append(run_id, RunFinished(status=status, counts=doc.counts))

    # -- planning --------------------------------------------------------------

    async def _recorded_plans(
        self,
        workspace_id: str,
        selection: SessionSelection,
        params: StartEval,
        scorers: builtins.list[dict[str, Any]],
    ) -> builtins.list[CasePlan]:
        ids = list(selection.session_ids)
        if not ids:
            tags: dict[str, frozenset[str]] = {}
            if selection.agent_id:
                tags["agent_id"] = frozenset([selection.agent_id])
            if selection.agent_version is not None:
                tags["agent_version"] = frozenset([str(selection.agent_version)])
            query = RecordQuery(
                kind=SESSION_KIND,
                workspace_id=workspace_id,
                tags=tags,
                created_gte=selection.created_gte,
                created_lte=selection.created_lte,
                include_archived=True,
                limit=min(max(selection.limit, 1), 1000),
            )
            for record in await self._store.list_records(query):
                meta = session_doc(record).state.metadata
                if "eval_run" in meta:
                    continue  # a case session of an earlier eval, not a recording
                if all(meta.get(k) == v for k, v in selection.metadata.items()):
                    ids.append(record.id)
        plans = []
        for session_id in dict.fromkeys(ids):
            await owned_record(self._store, SESSION_KIND, session_id, workspace_id)
            events = [decode_stored(s) for s in await self._store.read(session_id)]
            plan = plan_from_log(session_id, events, scorers=scorers)
            if plan.turns:
                plans.append(plan)
        if not plans:
            raise InvalidInputError("sessions: no recorded session with user turns matched")
        return plans

    async def _agent_refs(
        self, workspace_id: str, params: StartEval, suite_agent: str | None
    ) -> builtins.list[AgentRef]:
        agent_id = params.agent_id or suite_agent
        if agent_id is None:
            if params.sessions is None:
                raise InvalidInputError("agent_id: the suite names no agent; give agent_id")
            return [AgentRef(id=None, version=None)]
        versions = list(dict.fromkeys(params.versions))
        if not versions:
            versions = [(await self._agents.retrieve(workspace_id, agent_id)).version]
        for version in versions:
            await self._agents.retrieve(workspace_id, agent_id, version)
        return [AgentRef(id=agent_id, version=v) for v in versions]

    async def _environment(self, workspace_id: str, plans: Sequence[CasePlan]) -> str:
        """The recording's environment for re-runs; otherwise the workspace's eval one."""
        for plan in plans:
            if plan.source_session_id:
                record = await self._store.get_record(SESSION_KIND, plan.source_session_id)
                return session_doc(record).environment_id
        query = RecordQuery(kind="environment", workspace_id=workspace_id, limit=1000)
        for record in await self._store.list_records(query):
            if msgspec.json.decode(record.data).get("name") == _ENV_NAME:
                return record.id
        made = await self._environments.create(workspace_id, CreateEnvironment(name=_ENV_NAME))
        return made.id


def _cancelled(case: CaseRun, session: list[str]) -> CaseResult:
    return CaseResult(
        run_id=case.run_id,
        case_id=case.plan.case_id,
        agent_id=case.agent.id or "",
        agent_version=case.agent.version or 0,
        repeat=case.repeat,
        session_id=session[0] if session else None,
        status="cancelled",
        source_session_id=case.plan.source_session_id,
    )


def _plan_from_case(case: Any, suite: Any) -> CasePlan:
    """A suite case as a plan (the suite's scorers apply to every case, before its own)."""
    turns = [case.turn_events(i) for i in range(case.turn_count())]
    scorers = [msgspec.to_builtins(s) for s in [*suite.scorers, *case.scorers]]
    repeats = case.repeats if case.repeats is not None else suite.repeats
    return CasePlan(
        case_id=case.id,
        turns=turns,
        tool_results=dict(case.tool_results or {}),
        confirm=case.confirm,
        scorers=scorers,
        repeats=repeats,
        metadata=dict(case.metadata or {}),
    )
