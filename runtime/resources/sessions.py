"""Sessions: a session *is* its event log; its record is the projection kept beside it.

The record (kind `session`) holds the session's fixed facts (pinned agent snapshot,
environment, created_at) and the folded `SessionState`. The store rewrites it in the
same transaction as every append, through `project_session`, so a retrieve never folds and
never disagrees with the log.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from sessiond.runtime.engine.fold import OutcomeEvaluation, SessionState, awaits_result, fold
from sessiond.runtime.faults import crash_point
from sessiond.runtime.limits import Limits, Title
from sessiond.runtime.resources.agent_config import MCPToolset
from sessiond.runtime.resources.agents import AgentService, SessionAgent
from sessiond.runtime.resources.environments import (
    CloudConfig,
    Environment,
    EnvironmentService,
    Limited,
    SelfHostedConfig,
)
from sessiond.runtime.resources.log_check import check_log
from sessiond.runtime.resources.records import Change, Family
from sessiond.runtime.resources.transfer import SessionExport
from sessiond.runtime.resources.work import WorkQueue
from sessiond.runtime.sandbox.packages import check_packages
from sessiond.runtime.tools.workdirs import Workdirs
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.encoding import decode_event, decode_stored, encode_body
from sessiond.runtime.wire.params import SendEvents, validate_initial_events, validate_send
from sessiond.runtime.wire.usage import BudgetLimit, check_budget
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import InvalidInputError, NotFoundError
from sessiond.store.protocol import (
    AppendResult,
    NewEvent,
    Record,
    RecordQuery,
    Store,
    StoredEvent,
)

KIND = "session"
_MAX_METADATA_KEYS = 16


class CreateSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/sessions` body."""

    agent: msgspec.Raw
    """An agent id, `{type: "agent", …}` or `{type: "agent_with_overrides", …}`."""
    environment_id: str
    budget: BudgetLimit | None = None
    initial_events: list[msgspec.Raw] = []
    metadata: dict[str, str] = {}
    resources: list[msgspec.Raw] = []
    title: Title | None = None
    vault_ids: list[str] = []


class SessionAgentPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`agent` of a session update: full replacement of tools and/or MCP servers."""

    tools: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET
    mcp_servers: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET


class UpdateSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/sessions/{id}` body (absent = keep, null = clear where allowed)."""

    title: Title | None | msgspec.UnsetType = msgspec.UNSET
    metadata: dict[str, str | None] | None | msgspec.UnsetType = msgspec.UNSET
    agent: SessionAgentPatch | msgspec.UnsetType = msgspec.UNSET
    budget: BudgetLimit | None | msgspec.UnsetType = msgspec.UNSET
    vault_ids: list[str] | msgspec.UnsetType = msgspec.UNSET


class ForkOrigin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a forked session came from (our extension: `forked_from` on the session)."""

    session_id: str
    event_id: str
    """The last event of the original that the fork's log copies."""
    events_copied: int


class SessionDoc(msgspec.Struct, kw_only=True):
    """What the session record stores: fixed facts plus the folded state."""

    id: str
    agent: msgspec.Raw
    environment_id: str
    self_hosted: bool
    created_at: str
    budget: BudgetLimit | None = None
    state: SessionState
    forked_from: ForkOrigin | None = None
    cassette_of: str | None = None
    """Set for cassette re-runs: model responses come from this recorded session's log."""
    initial: SessionState | None = None
    """The state before the first event (title, metadata, created_at): what a replay folds
    the log onto to reproduce `state` (None on records written before it was kept)."""
    inert: bool = False
    """An imported recording: the engine runs nothing in it (whatever its log ends with)
    until its owner sends an event to it."""
    checks_results: bool = False
    """Its state's `open_tool_calls` has been kept from its first event, so a client's tool
    result for anything else is refused. False on records written before that was kept:
    their results are accepted as they were."""


class Session(msgspec.Struct, kw_only=True):
    """The wire `session` object."""

    id: str
    agent: msgspec.Raw
    environment_id: str
    status: str
    title: str | None
    metadata: dict[str, str]
    resources: list[msgspec.Raw]
    vault_ids: list[str]
    outcome_evaluations: list[OutcomeEvaluation]
    stats: msgspec.Raw
    usage: msgspec.Raw
    budget: BudgetLimit | None
    created_at: str
    updated_at: str
    archived_at: str | None
    deployment_id: str | None = None
    forked_from: ForkOrigin | None = None
    """Our extension: set on sessions made by `POST /v1/sessions/{id}/fork`."""
    type: str = "session"


class ForkSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/sessions/{id}/fork` body (our extension)."""

    event_id: str | None = None
    """The last event to copy; None copies the whole log."""
    agent: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    """Another agent version to continue with: an id or `{type: "agent", id, version}`."""
    title: Title | None = None
    metadata: dict[str, str] | None = None
    """Replaces the original's metadata (kept when absent)."""


class ImportSession(SessionExport, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/sessions/import` body (our extension): an exported session (as `GET
    /v1/sessions/{id}/export` serves it), and where to put it."""

    environment_id: str
    agent: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    """The agent of this workspace to pin (an id or `{type: "agent", id, version}`); by
    default the exported session's agent id and version, which must be one of ours."""


class _ImportedSession(msgspec.Struct, kw_only=True):
    """What an import reads of an export's session object (the rest is left alone)."""

    agent: dict[str, object]
    title: Title | None = None
    metadata: dict[str, str] = {}


class SessionDeleted(msgspec.Struct, kw_only=True):
    """`DELETE /v1/sessions/{id}` response."""

    id: str
    type: str = "session_deleted"


_decode_doc = msgspec.json.Decoder(SessionDoc).decode
_decode_snapshot = msgspec.json.Decoder(SessionAgent).decode
_decode_imported = msgspec.json.Decoder(_ImportedSession).decode
_encode = msgspec.json.Encoder().encode


def _tags(doc: SessionDoc, agent_id: str, agent_version: int) -> dict[str, str]:
    return {
        "status": doc.state.status,
        "agent_id": agent_id,
        "agent_version": str(agent_version),
        "environment_id": doc.environment_id,
    }


def project_session(record: Record, stored: Sequence[StoredEvent]) -> Record:
    """Fold new events into the session record (runs inside the append transaction)."""
    return _project(record, stored, wakes=False)


def project_client_input(record: Record, stored: Sequence[StoredEvent]) -> Record:
    """`project_session` for a client's send: it also wakes an imported (inert) session."""
    return _project(record, stored, wakes=True)


def _project(record: Record, stored: Sequence[StoredEvent], *, wakes: bool) -> Record:
    doc = _decode_doc(record.data)
    new_agent = doc.agent
    events = [decode_stored(s) for s in stored]
    state = doc.state
    for event in events:
        if isinstance(event, ev.SessionUpdated) and event.agent is not msgspec.UNSET:
            new_agent = msgspec.Raw(msgspec.json.encode(event.agent))
        if wakes and doc.checks_results:
            # Checked here, in the append's transaction: two workers posting the same
            # result at once cannot both pass.
            refusal = awaits_result(state, event)
            if refusal is not None:
                raise InvalidInputError(refusal, code="tool_result_not_awaited")
        state = fold(state, event)
    doc = msgspec.structs.replace(doc, state=state, agent=new_agent, inert=doc.inert and not wakes)
    tags = {**record.tags, "status": state.status}
    return msgspec.structs.replace(
        record,
        data=_encode(doc),
        tags=tags,
        updated_at=state.updated_at or record.updated_at,
        due=is_due(doc),
    )


def is_due(doc: SessionDoc) -> bool:
    """Whether the engine owes the session a step: a turn in flight (a crash may have cut
    it), or client input no step has taken up. Inert imports are never due."""
    state = doc.state
    return not doc.inert and (state.status in ("running", "rescheduling") or state.input_pending)


def agent_snapshot(record: Record) -> bytes:
    """The pinned agent snapshot (JSON) of a session record."""
    return bytes(_decode_doc(record.data).agent)


def session_doc(record: Record) -> SessionDoc:
    """The stored document of a session record (fixed facts and folded state)."""
    return _decode_doc(record.data)


def to_session(record: Record) -> Session:
    """The wire object for a stored session record."""
    doc = _decode_doc(record.data)
    state = doc.state
    return Session(
        id=doc.id,
        agent=doc.agent,
        environment_id=doc.environment_id,
        status=state.status,
        title=state.title,
        metadata=dict(state.metadata),
        resources=[],
        vault_ids=[],
        outcome_evaluations=list(state.outcome_evaluations),
        stats=msgspec.Raw(msgspec.json.encode(state.stats)),
        usage=msgspec.Raw(msgspec.json.encode(state.usage)),
        budget=doc.budget,
        created_at=doc.created_at,
        updated_at=record.updated_at,
        archived_at=record.archived_at,
        forked_from=doc.forked_from,
    )


_JSON_ID = re.compile(rb'"([A-Za-z0-9_-]{1,128})"(?!:)')
"""A JSON string value of the id alphabet (keys, followed by `:` in msgspec's compact
output, are left alone)."""


def _rewrite_ids(data: bytes, new_ids: dict[str, str]) -> bytes:
    """`data` (a stored event body, compact JSON) with every string value that is an old
    id replaced. Done on the text: a walk over the decoded value recursed once per level
    of nesting, and a tool input nested 600 deep overflowed it."""

    def swap(match: re.Match[bytes]) -> bytes:
        new = new_ids.get(match.group(1).decode())
        return b'"%s"' % new.encode() if new is not None else match.group(0)

    return _JSON_ID.sub(swap, data)


def refuse_unenforced(
    environment: Environment, agent: SessionAgent | None, *, sandboxed: bool = True
) -> None:
    """Refuse a session whose environment or agent asks for what this server does not do:
    a setting that is stored but has no effect (a `limited` network that tools could
    leave, packages never installed, MCP servers never connected) is worse than none.
    `sandboxed`: whether this server runs tools in bubblewrap (runtime/sandbox/), which
    limited networking and packages need."""
    unenforced: list[str] = []
    config = environment.config
    if isinstance(config, CloudConfig):
        if isinstance(config.networking, Limited) and not sandboxed:
            unenforced.append(
                "the environment's `limited` networking without the tool sandbox "
                "(bubblewrap is not available here)"
            )
        if any(getattr(config.packages, manager) for manager in _PACKAGE_MANAGERS):
            if not sandboxed:
                unenforced.append(
                    "the environment's `packages` without the tool sandbox (bubblewrap is "
                    "not available here)"
                )
            check_packages(config.packages)
    if agent is not None:
        if agent.mcp_servers or any(isinstance(t, MCPToolset) for t in agent.tools):
            unenforced.append("the agent's MCP servers (none would be connected)")
        if agent.skills:
            unenforced.append("the agent's skills (none would be loaded)")
        if agent.multiagent is not None:
            unenforced.append("the agent's `multiagent` config (no other agent would run)")
    if unenforced:
        raise InvalidInputError(
            "this server does not enforce " + "; ".join(unenforced) + ", so it refuses "
            "to run a session that relies on it",
            code="unenforced_config",
        )


_PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > _MAX_METADATA_KEYS:
        raise InvalidInputError("metadata: at most 16 keys", code="invalid_metadata")
    for key, value in metadata.items():
        if not key or len(key) > 64 or len(value) > 512:
            raise InvalidInputError(
                "metadata: keys must be 1-64 characters and values at most 512",
                code="invalid_metadata",
            )


InputListener = Callable[[str, Sequence[ev.EventBase]], Awaitable[None]]
"""Told about client events once they are appended (the supervisor wakes the engine)."""


class SessionService:
    """Create, read, update, archive and delete sessions; append client events."""

    def __init__(
        self,
        store: Store,
        agents: AgentService,
        environments: EnvironmentService,
        workdirs: Workdirs,
        on_input: InputListener | None = None,
        *,
        limits: Limits | None = None,
        sandboxed: bool = True,
        work: WorkQueue | None = None,
    ) -> None:
        self._store = store
        self.records = Family(store, KIND, SessionDoc)
        self._sandboxed = sandboxed
        self._work = work
        self._agents = agents
        self._environments = environments
        self._workdirs = workdirs
        self._on_input = on_input
        self._limits = limits or Limits()

    @staticmethod
    def environment_of(record: Record) -> str:
        """The environment a session record runs on."""
        return _decode_doc(record.data).environment_id

    async def get_record(self, workspace_id: str, session_id: str) -> Record:
        """The session's record; another workspace's session is simply not found."""
        return await self.records.owned(workspace_id, session_id)

    async def create(
        self,
        workspace_id: str,
        params: CreateSession,
        *,
        cassette_of: str | None = None,
        snapshot: bytes | None = None,
    ) -> Session:
        """Pin the agent version, check the environment, write the record and initial events.

        Two keywords serve evals and are not on the wire: `cassette_of` makes the engine
        answer this session's model requests from that recorded session's log (see
        `evals/cassette.py`); `snapshot` pins that exact agent snapshot (JSON) instead of
        resolving `params.agent`, to re-run a recording against the config it ran with.
        """
        if params.vault_ids:
            raise InvalidInputError(
                "vault_ids: vaults are not supported yet", code="vaults_unsupported"
            )
        if params.resources:
            raise InvalidInputError(
                "resources: session resources are not supported yet", code="resources_unsupported"
            )
        _check_metadata(params.metadata)
        check_budget(params.budget)
        initial = validate_initial_events(params.initial_events)
        environment = await self._environments.require_usable(workspace_id, params.environment_id)
        if snapshot is None:
            agent = await self._agents.resolve_for_session(workspace_id, params.agent)
        else:
            agent = _decode_snapshot(snapshot)
        refuse_unenforced(environment, agent, sandboxed=self._sandboxed)
        agent_raw = msgspec.Raw(msgspec.json.encode(agent))
        pinned = msgspec.json.decode(agent_raw)
        now = now_ts()
        session_id = new_id("sesn")
        doc = SessionDoc(
            checks_results=True,
            id=session_id,
            agent=agent_raw,
            environment_id=environment.id,
            self_hosted=isinstance(environment.config, SelfHostedConfig),
            created_at=now,
            budget=params.budget,
            state=SessionState(
                title=params.title, metadata=params.metadata, created_at=now, updated_at=now
            ),
            cassette_of=cassette_of,
        )
        doc.initial = doc.state
        record = Record(
            kind=KIND,
            id=session_id,
            workspace_id=workspace_id,
            data=_encode(doc),
            created_at=now,
            updated_at=now,
            tags=_tags(doc, pinned["id"], pinned["version"]),
        )
        new_events = [NewEvent(type=e.type, data=encode_body(e)) for e in initial]
        result = await self._store.create_stream(record, new_events, project=project_session)
        assert result.record is not None
        if doc.self_hosted and self._work is not None:
            # A self-hosted session needs a runtime from the start (§2.7): its worker
            # attaches now, before the first tool call waits for it.
            await self._work.ensure_item(session_id, environment.id, workspace_id)
        if initial and self._on_input is not None:
            await self._on_input(session_id, initial)
        return to_session(result.record)

    async def fork(self, workspace_id: str, session_id: str, params: ForkSession) -> Session:
        """A new session whose log starts with a copy of this one's up to `event_id`.

        The copy gets fresh event ids (ids are unique across the store) and every reference
        to a copied id inside the copied events is rewritten to match, so tool results
        still answer their calls. The original is only read. The fork pins the original's
        agent snapshot unless `agent` names another version, and continues live: if its log
        ends mid-turn, the engine picks the turn up from there.
        """
        record = await self.get_record(workspace_id, session_id)
        doc = _decode_doc(record.data)
        stored = await self._store.read(session_id)
        if params.event_id is None:
            prefix = stored
        else:
            cut = next((i for i, s in enumerate(stored) if s.id == params.event_id), None)
            if cut is None:
                raise InvalidInputError(
                    f"event_id: {params.event_id} is not an event of session {session_id}",
                    code="event_not_in_session",
                )
            prefix = stored[: cut + 1]
        if not prefix:
            raise InvalidInputError("cannot fork a session with no events", code="empty_session")
        if not isinstance(params.agent, msgspec.UnsetType):
            agent = await self._agents.resolve_for_session(workspace_id, params.agent)
            environment = await self._environments.retrieve(workspace_id, doc.environment_id)
            refuse_unenforced(environment, agent, sandboxed=self._sandboxed)
            agent_raw = msgspec.Raw(msgspec.json.encode(agent))
        else:
            agent_raw = doc.agent
        metadata = dict(doc.state.metadata) if params.metadata is None else params.metadata
        _check_metadata(metadata)
        now = now_ts()
        fork_id = new_id("sesn")
        new_ids = {s.id: new_id("sevt") for s in prefix}
        copied = [
            NewEvent(type=s.type, data=_rewrite_ids(s.data, new_ids), id=new_ids[s.id])
            for s in prefix
        ]
        snapshot = msgspec.json.decode(agent_raw)
        fork_doc = SessionDoc(
            checks_results=True,
            id=fork_id,
            agent=agent_raw,
            environment_id=doc.environment_id,
            self_hosted=doc.self_hosted,
            created_at=now,
            budget=doc.budget,
            state=SessionState(
                title=params.title if params.title is not None else doc.state.title,
                metadata=metadata,
                created_at=now,
                updated_at=now,
            ),
            forked_from=ForkOrigin(
                session_id=session_id, event_id=prefix[-1].id, events_copied=len(prefix)
            ),
        )
        fork_doc.initial = fork_doc.state
        fork_record = Record(
            kind=KIND,
            id=fork_id,
            workspace_id=workspace_id,
            data=_encode(fork_doc),
            created_at=now,
            updated_at=now,
            tags=_tags(fork_doc, snapshot["id"], snapshot["version"]),
        )
        result = await self._store.create_stream(fork_record, copied, project=project_session)
        assert result.record is not None
        if self._on_input is not None:
            await self._on_input(fork_id, [])
        return to_session(result.record)

    async def import_log(self, workspace_id: str, params: ImportSession) -> Session:
        """A new session holding a log exported elsewhere (a `SessionExport`), with fresh
        ids, checked (runtime/resources/log_check.py) before anything is written. It starts from the
        exported session object's title and metadata (the export's `initial` is not read).
        It pins an agent of this workspace, never the exported snapshot, and is inert: the
        engine runs nothing in it until a client sends to it, and then plans from the
        pinned agent's tools alone."""
        try:
            exported = _decode_imported(params.session)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInputError(f"session: {exc}", code="invalid_session") from exc
        environment = await self._environments.require_usable(workspace_id, params.environment_id)
        agent_ref = params.agent
        if isinstance(agent_ref, msgspec.UnsetType):
            agent_id, version = exported.agent.get("id"), exported.agent.get("version")
            if not isinstance(agent_id, str) or not isinstance(version, int):
                raise InvalidInputError(
                    "session.agent: needs the `id` and `version` of the exported agent",
                    code="invalid_snapshot",
                )
            agent_ref = msgspec.Raw(
                msgspec.json.encode({"type": "agent", "id": agent_id, "version": version})
            )
        try:
            agent = await self._agents.resolve_for_session(workspace_id, agent_ref)
        except NotFoundError as exc:
            raise InvalidInputError(
                f"agent: {exc.message}; an imported session pins an agent of this workspace "
                "(name one with `agent`)",
                code="import_agent_not_found",
            ) from exc
        refuse_unenforced(environment, agent, sandboxed=self._sandboxed)
        decoded: list[ev.EventBase] = []
        for index, raw in enumerate(params.events):
            try:
                decoded.append(decode_event(bytes(raw)))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise InvalidInputError(f"events[{index}]: {exc}", code="invalid_event") from exc
        check_log(decoded)
        metadata = dict(exported.metadata)
        _check_metadata(metadata)
        now = now_ts()
        session_id = new_id("sesn")
        new_ids = {e.id: new_id("sevt") for e in decoded}
        copied = [
            NewEvent(type=e.type, data=_rewrite_ids(encode_body(e), new_ids), id=new_ids[e.id])
            for e in decoded
        ]
        doc = SessionDoc(
            checks_results=True,
            id=session_id,
            agent=msgspec.Raw(msgspec.json.encode(agent)),
            environment_id=environment.id,
            self_hosted=isinstance(environment.config, SelfHostedConfig),
            created_at=now,
            state=SessionState(
                title=exported.title, metadata=metadata, created_at=now, updated_at=now
            ),
            inert=True,
        )
        doc.initial = doc.state
        record = Record(
            kind=KIND,
            id=session_id,
            workspace_id=workspace_id,
            data=_encode(doc),
            created_at=now,
            updated_at=now,
            tags=_tags(doc, agent.id, agent.version),
        )
        result = await self._store.create_stream(record, copied, project=project_session)
        assert result.record is not None
        return to_session(result.record)

    async def retrieve(self, workspace_id: str, session_id: str) -> Session:
        """One session."""
        return to_session(await self.get_record(workspace_id, session_id))

    async def list(self, query: RecordQuery) -> list[Session]:
        """A page of sessions (the API builds the query from its parameters)."""
        return [to_session(r) for r in await self._store.list_records(query)]

    async def send(self, workspace_id: str, session_id: str, params: SendEvents) -> AppendResult:
        """Validate a client's events and append them; nothing is written if any is invalid."""
        limit = self._limits.max_events_per_send
        if len(params.events) > limit:
            raise InvalidInputError(
                f"events: at most {limit} events per request (SESSIOND_MAX_EVENTS_PER_SEND), "
                f"got {len(params.events)}",
                code="too_many_events",
            )
        record = await self.get_record(workspace_id, session_id)
        doc = _decode_doc(record.data)
        if doc.state.status == "terminated":
            raise InvalidInputError("session is terminated", code="session_terminated")
        try:
            environment = await self._environments.retrieve(workspace_id, doc.environment_id)
        except NotFoundError:
            pass  # deleted since: nothing it asks for can be relied on
        else:
            # Checked again here: the environment may have been changed since the session
            # was created, to ask for what is not enforced.
            try:
                agent = _decode_snapshot(bytes(doc.agent))
            except msgspec.ValidationError:
                agent = None  # a snapshot recorded elsewhere, in an older shape
            refuse_unenforced(environment, agent, sandboxed=self._sandboxed)
        events = validate_send(params, self_hosted=doc.self_hosted)
        new_events = [NewEvent(type=e.type, data=encode_body(e)) for e in events]
        result = await self._store.append(
            session_id, new_events, expected_seq=None, project=project_client_input
        )
        crash_point("input_committed")
        if self._on_input is not None:
            await self._on_input(session_id, events)
        return result

    async def append_system(self, session_id: str, events: Sequence[ev.EventBase]) -> AppendResult:
        """Append server-side events (spans an eval grader writes, say); no client checks."""
        new_events = [NewEvent(type=e.type, data=encode_body(e), id=e.id or None) for e in events]
        return await self._store.append(
            session_id, new_events, expected_seq=None, project=project_session
        )

    async def update(self, workspace_id: str, session_id: str, params: UpdateSession) -> Session:
        """Apply an update as a `session.updated` event carrying only what changed."""
        record = await self.get_record(workspace_id, session_id)
        doc = _decode_doc(record.data)
        if params.vault_ids is not msgspec.UNSET:
            raise InvalidInputError("vault_ids: cannot be updated", code="vault_ids_reserved")
        if params.agent is not msgspec.UNSET:
            raise InvalidInputError(
                "agent: session tool overrides are not supported yet",
                code="agent_update_unsupported",
            )
        changes: dict[str, object] = {}
        if params.title is not msgspec.UNSET and params.title != doc.state.title:
            changes["title"] = params.title
        if params.metadata is not msgspec.UNSET:
            merged = dict(doc.state.metadata)
            if params.metadata is None:
                merged = {}
            else:
                for key, value in params.metadata.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
            _check_metadata(merged)
            if merged != doc.state.metadata:
                changes["metadata"] = merged
        if params.budget is not msgspec.UNSET:
            if doc.budget is None and params.budget is not None:
                raise InvalidInputError(
                    "budget: cannot be added to a session created without one",
                    code="budget_create_only",
                )
            raise InvalidInputError(
                "budget: updates are not supported yet", code="budget_unsupported"
            )
        if not changes:
            return to_session(record)
        updated = ev.SessionUpdated(**changes)  # type: ignore[arg-type]
        result = await self._store.append(
            session_id,
            [NewEvent(type=updated.type, data=encode_body(updated))],
            expected_seq=None,
            project=project_session,
        )
        assert result.record is not None
        return to_session(result.record)

    async def archive(self, workspace_id: str, session_id: str) -> Session:
        """Mark archived (not an event); retried when an append moved the revision."""
        archived: list[Record] = []

        def change(doc: SessionDoc, record: Record) -> Change[SessionDoc] | None:
            archived[:] = [record]
            if record.archived_at is not None:
                return None
            now = now_ts()
            archived[:] = [msgspec.structs.replace(record, archived_at=now)]
            return Change(value=doc, archived_at=now)

        await self.records.modify(workspace_id, session_id, change)
        return to_session(archived[0])

    async def delete(self, workspace_id: str, session_id: str) -> SessionDeleted:
        """Delete the session, its log and its working directory; open streams get
        `session.deleted` and close."""
        await self.get_record(workspace_id, session_id)
        await self._store.delete_stream(session_id)
        await self._workdirs.remove(session_id)
        if self._work is not None:
            await self._work.end_for_session(session_id)
        return SessionDeleted(id=session_id)
