"""Case plans: what the runner sends to a session, turn by turn, and how it answers.

Both kinds of case compile to the same `CasePlan`: a suite case (its input, tool results
and confirmation policy), and a recorded session to re-run (its user turns, and the
custom-tool results and confirmations its client sent, replayed in the same order).
Plans are stored in the eval run's record, so a run can be resumed and reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from sessiond.runtime.wire import events as ev

_TURN_INPUTS = ("user.message", "user.define_outcome")
_ANSWERS = ("user.custom_tool_result", "user.tool_confirmation")
_VOLATILE = ("id", "processed_at")


class RecordedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A client answer from a recording, minus the id of the call it answered."""

    tool: str
    """Name of the tool whose call it answered (answers are matched by name, in order)."""
    event: dict[str, Any]


class CasePlan(msgspec.Struct, frozen=True, kw_only=True):
    """One case, ready to run."""

    case_id: str
    turns: list[list[dict[str, Any]]]
    """User events to send, per turn; each turn is sent once the previous one rests."""
    tool_results: dict[str, str] = {}
    """Answers for custom tools, by tool name (suite cases)."""
    confirm: Literal["allow", "deny"] | None = None
    """How to answer tool confirmations (suite cases); None: a confirmation is an error."""
    recorded_answers: list[RecordedAnswer] = []
    """Answers the recorded client sent, in order (re-runs)."""
    scorers: list[dict[str, Any]] = []
    """Scorer specs as JSON objects (decoded by `evals/scorers.py` when scored)."""
    repeats: int = 1
    metadata: dict[str, str] = {}
    source_session_id: str | None = None
    """For re-runs: the recorded session (also the cassette, in cassette mode)."""


def _body(event: ev.EventBase) -> dict[str, Any]:
    """The event as a client would send it again (server-assigned fields left out)."""
    raw = msgspec.to_builtins(event)
    body = {k: v for k, v in raw.items() if k not in _VOLATILE}
    if event.type == "user.define_outcome":
        body.pop("outcome_id", None)
    return body


def plan_from_log(
    session_id: str,
    events: Sequence[ev.EventBase],
    *,
    scorers: Sequence[dict[str, Any]] = (),
    repeats: int = 1,
) -> CasePlan:
    """A re-run plan from a recorded log: its user turns and its client's answers.

    A turn is a run of user inputs with no agent activity between them; `user.interrupt`
    is left out (an interrupt is timing, not content).
    """
    by_id = {e.id: e for e in events if e.id}
    turns: list[list[dict[str, Any]]] = []
    answers: list[RecordedAnswer] = []
    open_turn = False
    for event in events:
        if event.type in _TURN_INPUTS:
            if not open_turn:
                turns.append([])
                open_turn = True
            turns[-1].append(_body(event))
            continue
        if event.type in _ANSWERS:
            answered = getattr(event, "custom_tool_use_id", None) or getattr(
                event, "tool_use_id", None
            )
            call = by_id.get(answered or "")
            name = getattr(call, "name", "") if call is not None else ""
            body = _body(event)
            body.pop("custom_tool_use_id", None)
            body.pop("tool_use_id", None)
            answers.append(RecordedAnswer(tool=name, event=body))
        elif event.type.startswith(("agent.", "span.", "session.status_running")):
            open_turn = False
    return CasePlan(
        case_id=session_id,
        turns=turns,
        recorded_answers=answers,
        scorers=list(scorers),
        repeats=repeats,
        source_session_id=session_id,
    )


class AnswerBook:
    """Hands out answers to a session's `requires_action`, each recorded answer once."""

    def __init__(self, plan: CasePlan) -> None:
        self._plan = plan
        self._recorded = list(plan.recorded_answers)

    def answer(self, call: ev.EventBase) -> dict[str, Any]:
        """The event that answers `call`; raises LookupError when the case has none."""
        name = getattr(call, "name", "")
        for index, recorded in enumerate(self._recorded):
            if recorded.tool == name:
                del self._recorded[index]
                return _addressed(call, dict(recorded.event))
        if isinstance(call, ev.AgentCustomToolUse):
            if name in self._plan.tool_results:
                text = self._plan.tool_results[name]
                return {
                    "type": "user.custom_tool_result",
                    "custom_tool_use_id": call.id,
                    "content": [{"type": "text", "text": text}],
                }
            raise LookupError(f"the case has no result for custom tool {name!r}")
        if self._plan.confirm is not None:
            return {
                "type": "user.tool_confirmation",
                "tool_use_id": call.id,
                "result": self._plan.confirm,
            }
        raise LookupError(f"the case does not say whether to allow tool {name!r} (set `confirm`)")


def _addressed(call: ev.EventBase, event: dict[str, Any]) -> dict[str, Any]:
    if event.get("type") == "user.custom_tool_result":
        event["custom_tool_use_id"] = call.id
    else:
        event["tool_use_id"] = call.id
    return event
