"""The seam between the engine and where tools run.

The engine asks the session's `Executor` to run each agent-toolset call and never learns
where it ran. Two kinds stand behind it: the local sandbox on this host (cloud
environments, runtime/sandbox/local.py) and the user's own workers (self-hosted
environments, runtime/resources/work.py), which are `remote`: their results arrive as the client's
`user.tool_result` events, so the engine waits for them (`requires_action`) instead of
running anything, and the executor's `hand_over` makes sure a worker will come.
Interrupts and timeouts are the same for both: a cancelled `run` kills what it started,
and a remote call before an interrupt is never waited on again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from sessiond.runtime.tools.toolset import ToolOutcome
from sessiond.runtime.wire import events as ev

Report = Callable[[Sequence[ev.EventBase]], Awaitable[None]]
"""Appends events to the session's log (an executor's progress, say)."""


class Executor(Protocol):
    """Runs one session's tool calls somewhere."""

    @property
    def remote(self) -> bool:
        """Whether the calls are answered by the client (`user.tool_result`)."""
        ...

    async def run(
        self,
        session_id: str,
        environment_id: str,
        name: str,
        params: dict[str, Any],
        report: Report,
    ) -> ToolOutcome:
        """Run one call; cancelling this kills it. Raises UnavailableError (code
        `tools_unavailable`) when the session's tools cannot run at all now (its packages
        failed to install, its environment is gone): the turn then ends with it."""
        ...

    async def hand_over(self, session_id: str, environment_id: str, workspace_id: str) -> None:
        """A remote executor's calls are waiting: make sure a worker will take them."""
        ...


class Executors(Protocol):
    """Which executor serves a session."""

    def for_session(self, *, self_hosted: bool) -> Executor:
        """The executor of a session on a self-hosted environment or a cloud one."""
        ...


class SessionExecutors:
    """Cloud sessions to the local executor, self-hosted ones to the work queue."""

    def __init__(self, local: Executor, remote: Executor) -> None:
        self._local = local
        self._remote = remote

    def for_session(self, *, self_hosted: bool) -> Executor:
        return self._remote if self_hosted else self._local
