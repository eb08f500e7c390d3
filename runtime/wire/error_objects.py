"""The `error` objects carried by `session.error` and `workflow_run.error` events.

These are data on the wire, not exceptions (those live in `store/errors.py`), hence the
`ErrorObject` suffix the SDK also uses. Every session error says what the client should do
next through `retry_status`; the tags keep the contract's `_error` suffix.
"""

from __future__ import annotations

import msgspec


class _Tagged(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of the tagged objects in this module."""


# -- retry status -------------------------------------------------------------------------


class RetryStatusRetrying(_Tagged, tag="retrying", frozen=True, kw_only=True):
    """The server is retrying; the same error may repeat, then end as `exhausted`."""


class RetryStatusExhausted(_Tagged, tag="exhausted", frozen=True, kw_only=True):
    """The turn is dead and queued inputs were flushed; the client may send a new prompt."""


class RetryStatusTerminal(_Tagged, tag="terminal", frozen=True, kw_only=True):
    """The session will move to `terminated`."""


RetryStatus = RetryStatusRetrying | RetryStatusExhausted | RetryStatusTerminal


# -- session.error ------------------------------------------------------------------------


class _SessionErrorObject(_Tagged, frozen=True, kw_only=True):
    message: str
    """Human-readable description."""
    retry_status: RetryStatus


class UnknownErrorObject(_SessionErrorObject, tag="unknown_error", frozen=True, kw_only=True):
    """A failure with no type of its own; clients match on `retry_status` and `message`."""


class ModelOverloadedErrorObject(
    _SessionErrorObject, tag="model_overloaded_error", frozen=True, kw_only=True
):
    """The model stayed overloaded through automatic retries."""


class ModelRateLimitedErrorObject(
    _SessionErrorObject, tag="model_rate_limited_error", frozen=True, kw_only=True
):
    """The model provider rate-limited the session."""


class ModelRequestFailedErrorObject(
    _SessionErrorObject, tag="model_request_failed_error", frozen=True, kw_only=True
):
    """A model request failed for another reason."""


class MCPConnectionFailedErrorObject(
    _SessionErrorObject, tag="mcp_connection_failed_error", frozen=True, kw_only=True
):
    """An MCP server could not be reached."""

    mcp_server_name: str


class MCPAuthenticationFailedErrorObject(
    _SessionErrorObject, tag="mcp_authentication_failed_error", frozen=True, kw_only=True
):
    """An MCP server rejected the session's credentials."""

    mcp_server_name: str


class BillingErrorObject(_SessionErrorObject, tag="billing_error", frozen=True, kw_only=True):
    """The workspace is out of credits or at its spend limit."""


class CredentialHostUnreachableErrorObject(
    _SessionErrorObject, tag="credential_host_unreachable_error", frozen=True, kw_only=True
):
    """A credential's allowed host is not permitted by the environment's network policy."""

    credential_id: str
    vault_id: str


class ToolUseLimitReachedErrorObject(
    _SessionErrorObject, tag="tool_use_limit_reached_error", frozen=True, kw_only=True
):
    """The turn hit its limit of tool-use rounds; the thread idles with `retries_exhausted`."""


class CompactionLimitReachedErrorObject(
    _SessionErrorObject, tag="compaction_limit_reached_error", frozen=True, kw_only=True
):
    """Context was compacted too often in a row without progress; the thread idles."""


class _RepositoryErrorObject(_SessionErrorObject, frozen=True, kw_only=True):
    repository_url: str | None = None
    """The repository concerned, or null when it could not be identified."""


class RepositoryAuthenticationErrorObject(
    _RepositoryErrorObject, tag="repository_authentication_error", frozen=True, kw_only=True
):
    """The repository host rejected (or required) credentials; the session goes on without it."""


class RepositoryForbiddenErrorObject(
    _RepositoryErrorObject, tag="repository_forbidden_error", frozen=True, kw_only=True
):
    """The credentials may not read the repository; the session goes on without it."""


class RepositoryNotFoundErrorObject(
    _RepositoryErrorObject, tag="repository_not_found_error", frozen=True, kw_only=True
):
    """The repository does not exist; the session goes on without it."""


class RepositoryCheckoutErrorObject(
    _RepositoryErrorObject, tag="repository_checkout_error", frozen=True, kw_only=True
):
    """The requested branch or commit could not be checked out."""


class RepositoryCloneErrorObject(
    _RepositoryErrorObject, tag="repository_clone_error", frozen=True, kw_only=True
):
    """The repository could not be cloned."""


SessionErrorObject = (
    UnknownErrorObject
    | ModelOverloadedErrorObject
    | ModelRateLimitedErrorObject
    | ModelRequestFailedErrorObject
    | MCPConnectionFailedErrorObject
    | MCPAuthenticationFailedErrorObject
    | BillingErrorObject
    | CredentialHostUnreachableErrorObject
    | ToolUseLimitReachedErrorObject
    | CompactionLimitReachedErrorObject
    | RepositoryAuthenticationErrorObject
    | RepositoryForbiddenErrorObject
    | RepositoryNotFoundErrorObject
    | RepositoryCheckoutErrorObject
    | RepositoryCloneErrorObject
)


# -- workflow_run.error -------------------------------------------------------------------


class _WorkflowRunErrorObject(_Tagged, frozen=True, kw_only=True):
    message: str
    """Short explanation written by the server; never content from the run or its agents."""


class WorkflowRunTimeoutErrorObject(
    _WorkflowRunErrorObject, tag="timeout_error", frozen=True, kw_only=True
):
    """The run reached its time limit."""


class WorkflowRunProgramErrorObject(
    _WorkflowRunErrorObject, tag="program_error", frozen=True, kw_only=True
):
    """The run's plan (a program the agent wrote) failed."""


class WorkflowRunUnknownErrorObject(
    _WorkflowRunErrorObject, tag="unknown_error", frozen=True, kw_only=True
):
    """A failure that has no type of its own."""


class WorkflowRunThreadLimitErrorObject(
    _WorkflowRunErrorObject, tag="thread_limit_error", frozen=True, kw_only=True
):
    """The run needed more threads than allowed."""


class WorkflowRunMaxRunsErrorObject(
    _WorkflowRunErrorObject, tag="max_workflow_runs_error", frozen=True, kw_only=True
):
    """No run was created: the session was at its limit of open runs."""


WorkflowRunErrorObject = (
    WorkflowRunTimeoutErrorObject
    | WorkflowRunProgramErrorObject
    | WorkflowRunUnknownErrorObject
    | WorkflowRunThreadLimitErrorObject
    | WorkflowRunMaxRunsErrorObject
)
