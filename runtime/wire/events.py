"""The session event catalogue: one frozen Struct per event type of the contract.

Tags are the contract's event types (`BetaManagedAgentsSessionEventType`) and never change.
Field names and shapes follow the SDK models in `anthropic.types.beta(.sessions)`.

* `SessionEvent` is the union of the 41 types a session log holds (what `GET …/events`
  returns and `types[]` filters on); `EVENT_TYPES` is the set of their tags.
* `SessionDeleted` is in the SDK's event union but never in a log: the log is gone by the
  time it is sent, so it lives only on streams, like the `event_start` / `event_delta`
  previews. `StreamEvent` is everything a stream may carry.
* `id` and `processed_at` are assigned by the store (public id and `recorded_at`). They are
  not part of the stored body; `runtime/wire/encoding.py` splices them in on the way out.

Event Structs do not forbid unknown fields, so older code reads newer logs. Every field
added later must have a default.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import msgspec

from sessiond.runtime.wire.content import (
    AgentContent,
    SystemContent,
    TextBlock,
    ThreadContent,
    ToolResultContent,
    UserContent,
)
from sessiond.runtime.wire.error_objects import SessionErrorObject, WorkflowRunErrorObject
from sessiond.runtime.wire.usage import BudgetLimit, SessionUsageSnapshot, SpanModelUsage


# Every subclass below repeats `frozen=True, kw_only=True`: msgspec applies `kw_only` only to
# the fields of the class that says it, and mypy's dataclass_transform treats a subclass that
# does not say `frozen=True` as mutable.
class _Tagged(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", gc=False
):
    """Base of the tagged value objects nested in events."""


class EventBase(_Tagged, frozen=True, kw_only=True):
    """Base of every session event; subclasses set `tag=` to the contract's event type."""

    id: str = ""
    """Public event id (`sevt_…`), assigned by the store; empty until stored."""
    processed_at: str | None = None
    """When the store recorded the event (RFC 3339, UTC); None until stored."""

    @property
    def type(self) -> str:
        """The event type (the tag)."""
        return str(self.__struct_config__.tag)


# -- values nested in events --------------------------------------------------------------

EvaluatedPermission = Literal["allow", "ask", "deny"]


class AutoAllow(_Tagged, tag="allow", frozen=True, kw_only=True):
    """The server judged the call safe to run without approval."""


class AutoAsk(_Tagged, tag="ask", frozen=True, kw_only=True):
    """The server reached no judgement; the call waits for client approval."""

    reason_code: str
    """Open registry, currently `indeterminate`."""


class AutoDeny(_Tagged, tag="deny", frozen=True, kw_only=True):
    """The server refused the call; it does not run and an error result is appended."""

    reason_code: str
    """Open registry, currently `high_risk` or `indeterminate`."""


AutoEvaluatedPermission = AutoAllow | AutoAsk | AutoDeny


class EvaluationAlwaysAllow(_Tagged, tag="always_allow", frozen=True, kw_only=True):
    """The resolved permission policy was `always_allow` (goes with `allow`)."""


class EvaluationAlwaysAsk(_Tagged, tag="always_ask", frozen=True, kw_only=True):
    """The resolved permission policy was `always_ask` (goes with `ask`)."""


class EvaluationAuto(_Tagged, tag="auto", frozen=True, kw_only=True):
    """The resolved permission policy was `auto`: the server judged this call."""

    evaluated_permission: AutoEvaluatedPermission


ToolEvaluation = EvaluationAlwaysAllow | EvaluationAlwaysAsk | EvaluationAuto
"""Which resolved policy produced a tool call's `evaluated_permission`."""


class EndTurn(_Tagged, tag="end_turn", frozen=True, kw_only=True):
    """The turn finished naturally."""


class RequiresAction(_Tagged, tag="requires_action", frozen=True, kw_only=True):
    """The agent waits for client input on the listed events."""

    event_ids: list[str]
    """Ids of the `agent.custom_tool_use` / `agent.tool_use` / `agent.mcp_tool_use` events
    awaiting a result or confirmation. Resolving only some re-emits idle with the rest."""


class RetriesExhausted(_Tagged, tag="retries_exhausted", frozen=True, kw_only=True):
    """The turn died after errors, or hit the tool-use-round or compaction limit."""


class BudgetReached(_Tagged, tag="budget_reached", frozen=True, kw_only=True):
    """The tracked list cost reached the budget (or an unpriced model was used)."""


class Refusal(_Tagged, tag="refusal", frozen=True, kw_only=True):
    """The model's response was refused; `stop_details` says why."""


StopReason = EndTurn | RequiresAction | RetriesExhausted | BudgetReached | Refusal


class RefusalStopDetails(_Tagged, tag="refusal", frozen=True, kw_only=True):
    """Details of a refusal stop."""

    category: (
        Literal["cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms"] | None
    ) = None
    """The policy category that triggered the refusal; null when there is none."""
    explanation: str | None = None
    """Human-readable; the wording may change, so never parse it."""


class TextRubric(_Tagged, tag="text", frozen=True, kw_only=True):
    """A rubric given inline (plain text or markdown)."""

    content: str


class FileRubric(_Tagged, tag="file", frozen=True, kw_only=True):
    """A rubric uploaded through the Files API."""

    file_id: str


Rubric = TextRubric | FileRubric


class WorkflowRunPhase(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A phase a workflow run's plan declares."""

    id: str
    name: str
    description: str | None = None


class WorkflowRunCompleted(_Tagged, tag="completed", frozen=True, kw_only=True):
    """The run's plan finished (which says nothing about whether the work succeeded)."""


class WorkflowRunStopped(_Tagged, tag="stopped", frozen=True, kw_only=True):
    """The agent stopped the run."""


class WorkflowRunFailed(_Tagged, tag="error", frozen=True, kw_only=True):
    """The run failed or reached its time limit."""

    error: WorkflowRunErrorObject


WorkflowRunResult = WorkflowRunCompleted | WorkflowRunStopped | WorkflowRunFailed


# -- user and system events ---------------------------------------------------------------


class UserMessage(EventBase, tag="user.message", frozen=True, kw_only=True):
    """A user message; starts or continues a turn."""

    content: list[UserContent]


class UserInterrupt(EventBase, tag="user.interrupt", frozen=True, kw_only=True):
    """Stop the agent and return control to the user."""

    session_thread_id: str | None = None
    """The one thread to interrupt; absent means every non-archived thread."""


class UserToolConfirmation(EventBase, tag="user.tool_confirmation", frozen=True, kw_only=True):
    """Approves or denies a tool call that waits for confirmation."""

    result: Literal["allow", "deny"]
    tool_use_id: str
    """Id of the `agent.tool_use` or `agent.mcp_tool_use` event being answered."""
    deny_message: str | None = None
    """Context for a denial (only with `result="deny"`)."""
    session_thread_id: str | None = None
    """The subagent thread the server routed this to; absent for the primary thread."""


class UserCustomToolResult(EventBase, tag="user.custom_tool_result", frozen=True, kw_only=True):
    """The client's result for an `agent.custom_tool_use`."""

    custom_tool_use_id: str
    """Id of the `agent.custom_tool_use` event this answers."""
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None
    session_thread_id: str | None = None
    """The subagent thread the server routed this to; absent for the primary thread."""


class UserToolResult(EventBase, tag="user.tool_result", frozen=True, kw_only=True):
    """The client's result for an agent-toolset call (self-hosted environments only)."""

    tool_use_id: str
    """Id of the `agent.tool_use` event this answers."""
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None
    session_thread_id: str | None = None
    """The subagent thread the server routed this to; absent for the primary thread."""


class UserDefineOutcome(EventBase, tag="user.define_outcome", frozen=True, kw_only=True):
    """An outcome for the agent to work toward, graded against a rubric."""

    description: str
    """What the agent should produce."""
    outcome_id: str
    """Server-generated `outc_…` id that `span.outcome_evaluation_*` events refer to."""
    rubric: Rubric
    max_iterations: int | None = None
    """Evaluate-then-revise cycles before giving up (default 3, at most 20)."""


class SystemMessage(EventBase, tag="system.message", frozen=True, kw_only=True):
    """System-role content appended to the conversation after a user turn."""

    content: list[SystemContent]


# -- agent events -------------------------------------------------------------------------


class AgentMessage(EventBase, tag="agent.message", frozen=True, kw_only=True):
    """What the model said, as final content blocks (deltas are never stored)."""

    content: list[AgentContent]


class AgentThinking(EventBase, tag="agent.thinking", frozen=True, kw_only=True):
    """The agent is making progress by extended thinking (a signal; carries no text)."""


class AgentToolUse(EventBase, tag="agent.tool_use", frozen=True, kw_only=True):
    """The agent calls a built-in agent-toolset tool (bash, read, write, …)."""

    input: dict[str, Any]
    name: str
    evaluated_permission: EvaluatedPermission | None = None
    """Whether the call may run; clients treat absence as `allow`."""
    evaluation: ToolEvaluation | None = None
    """Which policy produced `evaluated_permission`; absent when refused before any applied."""
    session_thread_id: str | None = None
    """Set when cross-posted from a subagent thread to the primary stream."""


class AgentToolResult(EventBase, tag="agent.tool_result", frozen=True, kw_only=True):
    """The result of an agent-toolset call the server executed."""

    tool_use_id: str
    """Id of the `agent.tool_use` event this answers."""
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None


class AgentCustomToolUse(EventBase, tag="agent.custom_tool_use", frozen=True, kw_only=True):
    """The agent calls a custom tool; the client runs it and sends the result."""

    input: dict[str, Any]
    name: str
    session_thread_id: str | None = None
    """Set when cross-posted from a subagent thread to the primary stream."""


class AgentMCPToolUse(EventBase, tag="agent.mcp_tool_use", frozen=True, kw_only=True):
    """The agent calls a tool of an MCP server."""

    input: dict[str, Any]
    mcp_server_name: str
    name: str
    evaluated_permission: EvaluatedPermission | None = None
    """Whether the call may run; clients treat absence as `allow`."""
    evaluation: ToolEvaluation | None = None
    """Which policy produced `evaluated_permission`; absent when refused before any applied."""
    session_thread_id: str | None = None
    """Set when cross-posted from a subagent thread to the primary stream."""


class AgentMCPToolResult(EventBase, tag="agent.mcp_tool_result", frozen=True, kw_only=True):
    """The result of an MCP tool call."""

    mcp_tool_use_id: str
    """Id of the `agent.mcp_tool_use` event this answers."""
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None


class AgentThreadMessageSent(EventBase, tag="agent.thread_message_sent", frozen=True, kw_only=True):
    """An agent sent a message to another thread (on the sender's stream)."""

    content: list[ThreadContent]
    to_session_thread_id: str
    to_agent_name: str | None = None
    """The callable agent addressed; absent when sent to the primary agent."""


class AgentThreadMessageReceived(
    EventBase, tag="agent.thread_message_received", frozen=True, kw_only=True
):
    """A message from another thread arrived (on the receiver's stream)."""

    content: list[ThreadContent]
    from_session_thread_id: str
    from_agent_name: str | None = None
    """The callable agent it came from; absent when from the primary agent."""


class AgentThreadContextCompacted(
    EventBase, tag="agent.thread_context_compacted", frozen=True, kw_only=True
):
    """The thread's context was compacted (summarised)."""


# -- session and thread events ------------------------------------------------------------


class SessionStatusRunning(EventBase, tag="session.status_running", frozen=True, kw_only=True):
    """The agent started or resumed work."""


class SessionStatusIdle(EventBase, tag="session.status_idle", frozen=True, kw_only=True):
    """The agent stopped and waits for input."""

    stop_reason: StopReason
    stop_details: RefusalStopDetails | None = None


class SessionStatusRescheduled(
    EventBase, tag="session.status_rescheduled", frozen=True, kw_only=True
):
    """A transient error; the session is retrying (status `rescheduling`)."""


class SessionStatusTerminated(
    EventBase, tag="session.status_terminated", frozen=True, kw_only=True
):
    """The session has ended for good."""


class SessionError(EventBase, tag="session.error", frozen=True, kw_only=True):
    """Something failed; `error.retry_status` says what happens next."""

    error: SessionErrorObject


class SessionUpdated(EventBase, tag="session.updated", frozen=True, kw_only=True):
    """An update changed the session; only the changed fields are present."""

    agent: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    """The full agent snapshot after the update (opaque here: the agent types own it)."""
    budget: BudgetLimit | None | msgspec.UnsetType = msgspec.UNSET
    """The new budget, or null when the update removed it."""
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    """The full metadata map after the update (`{}` when it was cleared)."""
    title: str | None | msgspec.UnsetType = msgspec.UNSET
    """The new title (null when cleared)."""


class SessionUsage(EventBase, tag="session.usage", frozen=True, kw_only=True):
    """A snapshot of the session's cumulative usage and list cost."""

    usage: SessionUsageSnapshot
    budget: BudgetLimit | None = None
    """The budget at snapshot time; null when the session has none."""
    list_cost_micro_usd: int | None = None
    """Our extension: the exact list cost so far in millionths of a dollar (`usage.list_cost`
    is in whole cents, rounded up), so that the sum over many requests loses nothing."""


class SessionThreadCreated(EventBase, tag="session.thread_created", frozen=True, kw_only=True):
    """A child thread was created (on the parent's stream)."""

    agent_name: str
    session_thread_id: str
    workflow_run_id: str | None = None
    """The workflow run that created the thread, if any."""


class SessionThreadStatusRunning(
    EventBase, tag="session.thread_status_running", frozen=True, kw_only=True
):
    """A thread started or resumed work."""

    agent_name: str
    session_thread_id: str


class SessionThreadStatusIdle(
    EventBase, tag="session.thread_status_idle", frozen=True, kw_only=True
):
    """A thread stopped and waits."""

    agent_name: str
    session_thread_id: str
    stop_reason: StopReason
    stop_details: RefusalStopDetails | None = None


class SessionThreadStatusRescheduled(
    EventBase, tag="session.thread_status_rescheduled", frozen=True, kw_only=True
):
    """A thread hit a transient error and is retrying."""

    agent_name: str
    session_thread_id: str


class SessionThreadStatusTerminated(
    EventBase, tag="session.thread_status_terminated", frozen=True, kw_only=True
):
    """A thread has ended."""

    agent_name: str
    session_thread_id: str


# -- spans --------------------------------------------------------------------------------


class SpanModelRequestStart(EventBase, tag="span.model_request_start", frozen=True, kw_only=True):
    """A model request began."""


class SpanModelRequestEnd(EventBase, tag="span.model_request_end", frozen=True, kw_only=True):
    """A model request ended; carries its token usage."""

    model_request_start_id: str
    """Id of the matching `span.model_request_start` event."""
    model_usage: SpanModelUsage
    is_error: bool | None = None


class SpanOutcomeEvaluationStart(
    EventBase, tag="span.outcome_evaluation_start", frozen=True, kw_only=True
):
    """Grading of an outcome began."""

    iteration: int
    """0 for the first evaluation, 1 for the one after the first revision, …"""
    outcome_id: str


class SpanOutcomeEvaluationOngoing(
    EventBase, tag="span.outcome_evaluation_ongoing", frozen=True, kw_only=True
):
    """Heartbeat while grading runs (tells "running" from "stuck")."""

    iteration: int
    outcome_id: str


class SpanOutcomeEvaluationEnd(
    EventBase, tag="span.outcome_evaluation_end", frozen=True, kw_only=True
):
    """Grading of an outcome ended with a verdict."""

    explanation: str
    iteration: int
    outcome_evaluation_start_id: str
    """Id of the matching `span.outcome_evaluation_start` event."""
    outcome_id: str
    result: str
    """`satisfied`, `needs_revision` (another cycle follows), `max_iterations_reached`,
    `failed` or `interrupted`; a plain string in the contract."""
    usage: SpanModelUsage
    """Summed over the cycle's grader model requests."""


# -- workflow runs ------------------------------------------------------------------------


class WorkflowRunCreated(EventBase, tag="workflow_run.created", frozen=True, kw_only=True):
    """A workflow run was created (before any of its other events)."""

    name: str
    phases: list[WorkflowRunPhase]
    workflow_run_id: str
    description: str | None = None


class WorkflowRunStatusRunning(
    EventBase, tag="workflow_run.status_running", frozen=True, kw_only=True
):
    """A workflow run started or resumed."""

    workflow_run_id: str


class WorkflowRunStatusIdle(EventBase, tag="workflow_run.status_idle", frozen=True, kw_only=True):
    """A workflow run went idle."""

    workflow_run_id: str


class WorkflowRunStatusEnded(EventBase, tag="workflow_run.status_ended", frozen=True, kw_only=True):
    """A workflow run ended (its last event)."""

    result: WorkflowRunResult
    workflow_run_id: str


class WorkflowRunError(EventBase, tag="workflow_run.error", frozen=True, kw_only=True):
    """A workflow run met an error, or an error kept one from being created."""

    error: WorkflowRunErrorObject
    workflow_run_id: str | None = None
    """Null when the error kept the run from being created."""


class WorkflowRunPhaseStarted(
    EventBase, tag="workflow_run.phase_started", frozen=True, kw_only=True
):
    """A workflow run's plan entered a phase."""

    workflow_run_id: str
    workflow_run_phase_id: str


class WorkflowRunPhaseEnded(EventBase, tag="workflow_run.phase_ended", frozen=True, kw_only=True):
    """A workflow run's plan left a phase."""

    phase_started_id: str
    """Id of the `workflow_run.phase_started` event that opened the phase."""
    workflow_run_id: str
    workflow_run_phase_id: str


# -- stream-only --------------------------------------------------------------------------


class SessionDeleted(EventBase, tag="session.deleted", frozen=True, kw_only=True):
    """The session was deleted; the last frame of any open stream (never in a log)."""


class AgentMessagePreview(_Tagged, tag="agent.message", frozen=True, kw_only=True):
    """The `agent.message` an `event_start` opens; its deltas follow."""

    id: str
    """The id the final `agent.message` will carry."""


class AgentThinkingPreview(_Tagged, tag="agent.thinking", frozen=True, kw_only=True):
    """The `agent.thinking` an `event_start` announces (start-only, no deltas)."""

    id: str
    """The id the final `agent.thinking` will carry."""


class ContentDelta(_Tagged, tag="content_delta", frozen=True, kw_only=True):
    """A text fragment of one entry of the previewed message's content."""

    content: TextBlock
    index: int | None = None
    """Position in the final content array: a new index starts a block, a known one
    appends to it. Indices start at 0 and grow by one."""


class EventStart(_Tagged, tag="event_start", frozen=True, kw_only=True):
    """Opens the preview of an event still being produced (stream-only, opt-in)."""

    event: AgentMessagePreview | AgentThinkingPreview


class EventDelta(_Tagged, tag="event_delta", frozen=True, kw_only=True):
    """One fragment of a previewed event (stream-only, opt-in, best effort)."""

    delta: ContentDelta
    event_id: str
    """The id announced by the matching `event_start`."""


# -- unions -------------------------------------------------------------------------------

UserEvent = (
    UserMessage
    | UserInterrupt
    | UserToolConfirmation
    | UserCustomToolResult
    | UserToolResult
    | UserDefineOutcome
    | SystemMessage
)
"""What a client's send becomes once accepted (the echo)."""

INPUT_EVENTS = (
    UserMessage,
    SystemMessage,
    UserCustomToolResult,
    UserToolResult,
    UserToolConfirmation,
    UserDefineOutcome,
)
"""Client events that ask the engine for a step (every client event but an interrupt)."""

SessionEvent = (
    UserMessage
    | UserInterrupt
    | UserToolConfirmation
    | UserCustomToolResult
    | UserToolResult
    | UserDefineOutcome
    | SystemMessage
    | AgentMessage
    | AgentThinking
    | AgentToolUse
    | AgentToolResult
    | AgentCustomToolUse
    | AgentMCPToolUse
    | AgentMCPToolResult
    | AgentThreadMessageSent
    | AgentThreadMessageReceived
    | AgentThreadContextCompacted
    | SessionStatusRunning
    | SessionStatusIdle
    | SessionStatusRescheduled
    | SessionStatusTerminated
    | SessionError
    | SessionUpdated
    | SessionUsage
    | SessionThreadCreated
    | SessionThreadStatusRunning
    | SessionThreadStatusIdle
    | SessionThreadStatusRescheduled
    | SessionThreadStatusTerminated
    | SpanModelRequestStart
    | SpanModelRequestEnd
    | SpanOutcomeEvaluationStart
    | SpanOutcomeEvaluationOngoing
    | SpanOutcomeEvaluationEnd
    | WorkflowRunCreated
    | WorkflowRunStatusRunning
    | WorkflowRunStatusIdle
    | WorkflowRunStatusEnded
    | WorkflowRunError
    | WorkflowRunPhaseStarted
    | WorkflowRunPhaseEnded
)
"""Every event a session log may hold."""

StreamPreview = EventStart | EventDelta
"""Stream-only previews of events still being produced."""

StreamEvent = SessionEvent | SessionDeleted | EventStart | EventDelta
"""Everything a session stream may carry."""

EVENT_CLASSES: dict[str, type[EventBase]] = {
    str(cls.__struct_config__.tag): cls for cls in typing.get_args(SessionEvent)
}
"""Event type (tag) to Struct, for the types a log may hold."""

EVENT_TYPES: frozenset[str] = frozenset(EVENT_CLASSES)
"""The tags a log may hold: exactly the contract's `BetaManagedAgentsSessionEventType`."""
