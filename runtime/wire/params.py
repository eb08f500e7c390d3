"""What a client may send: the 7 event params, the send request, and the rules they obey.

`POST /v1/sessions/{id}/events` takes `{"events": [...]}`. Each param is a Struct that
forbids unknown fields, so a typo fails with msgspec's `$.path` message. The rules msgspec
cannot express (a non-empty batch, `deny_message` only with a denial, where a
`system.message` may stand, `max_iterations` in 1..20, rubric length, `user.tool_result`
only on self-hosted environments) are checked by `check_batch`.

Deliberate deviation: `SendEvents.events` holds raw JSON and `validate_send` decodes it one
event at a time. A tagged union would reject `{"type": "agent.message"}` as merely an
"invalid value"; decoding each event ourselves names it as a server-only type and keeps the
`$.events[i]…` path in every message, for `initial_events` as well.

Nested content blocks are shared with the stored events (`runtime/wire/content.py`) and so do not
forbid unknown fields; which blocks may appear in which event is still enforced.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from typing import Literal, NoReturn

import msgspec

from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import SystemContent, ToolResultContent, UserContent
from sessiond.store.clock import new_id
from sessiond.store.errors import InvalidInputError

RUBRIC_MAX_CHARS = 262_144
MAX_ITERATIONS_DEFAULT = 3
MAX_ITERATIONS_LIMIT = 20
MAX_INITIAL_EVENTS = 50


class _Params(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """Base of the event params; subclasses set `tag=` to the event type."""

    @property
    def type(self) -> str:
        """The event type (the tag)."""
        return str(self.__struct_config__.tag)


class UserMessageParams(_Params, tag="user.message", frozen=True, kw_only=True):
    """Send a user message."""

    content: list[UserContent]


class UserInterruptParams(_Params, tag="user.interrupt", frozen=True, kw_only=True):
    """Interrupt the agent."""

    session_thread_id: str | None = None
    """Interrupt only this thread; absent means every non-archived thread."""


class UserToolConfirmationParams(_Params, tag="user.tool_confirmation", frozen=True, kw_only=True):
    """Allow or deny a tool call that waits for confirmation."""

    result: Literal["allow", "deny"]
    tool_use_id: str
    deny_message: str | None = None
    """Only with `result="deny"`."""


class UserCustomToolResultParams(_Params, tag="user.custom_tool_result", frozen=True, kw_only=True):
    """Answer an `agent.custom_tool_use`."""

    custom_tool_use_id: str
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None


class UserToolResultParams(_Params, tag="user.tool_result", frozen=True, kw_only=True):
    """Answer an `agent.tool_use` the client executed (self-hosted environments only)."""

    tool_use_id: str
    content: list[ToolResultContent] | None = None
    is_error: bool | None = None


class UserDefineOutcomeParams(_Params, tag="user.define_outcome", frozen=True, kw_only=True):
    """Define an outcome for the agent to work toward."""

    description: str
    rubric: ev.Rubric
    max_iterations: int | None = None
    """1..20; absent or null means 3."""


class SystemMessageParams(_Params, tag="system.message", frozen=True, kw_only=True):
    """Append system-role content right after the user turn it accompanies."""

    content: list[SystemContent]


EventParams = (
    UserMessageParams
    | UserInterruptParams
    | UserToolConfirmationParams
    | UserCustomToolResultParams
    | UserToolResultParams
    | UserDefineOutcomeParams
    | SystemMessageParams
)

SENDABLE_TYPES: tuple[str, ...] = tuple(
    str(cls.__struct_config__.tag) for cls in typing.get_args(EventParams)
)
INITIAL_TYPES: tuple[str, ...] = ("user.message", "user.define_outcome")


class SendEvents(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/sessions/{id}/events` body."""

    events: list[msgspec.Raw]
    """Event params, decoded one by one by `validate_send` (see the module docstring)."""


class _TypeProbe(msgspec.Struct):
    type: str | None = None


_decode_params = msgspec.json.Decoder(EventParams).decode
_decode_probe = msgspec.json.Decoder(_TypeProbe).decode
_BLOCK_REFUSED = re.compile(
    r"Invalid value '(?P<block>[^']*)' - at `\$(?P<path>\.content\[\d+\]\.type)`"
)
_AFTER_SYSTEM_MESSAGE = (UserMessageParams, UserToolResultParams, UserCustomToolResultParams)


def validate_send(batch: SendEvents, *, self_hosted: bool) -> list[ev.UserEvent]:
    """Decode, check and convert a client's events; raises InvalidInputError on any problem.

    Args:
        self_hosted: whether the session's environment is self-hosted (which alone
            allows `user.tool_result`).

    Returns:
        The events to append, in order, not yet stored (no id or timestamp).
    """
    params = decode_params(batch.events, field="events", allowed=SENDABLE_TYPES)
    check_batch(params, self_hosted=self_hosted)
    return [to_event(p) for p in params]


def validate_initial_events(
    raw: Sequence[msgspec.Raw],
) -> list[ev.UserMessage | ev.UserDefineOutcome]:
    """Decode, check and convert a session create's `initial_events` (user.message and
    user.define_outcome only, at most 50, possibly none)."""
    if len(raw) > MAX_INITIAL_EVENTS:
        raise InvalidInputError(
            f"initial_events: at most {MAX_INITIAL_EVENTS} events are allowed, got {len(raw)}",
            code="invalid_event",
        )
    params = decode_params(raw, field="initial_events", allowed=INITIAL_TYPES)
    result: list[ev.UserMessage | ev.UserDefineOutcome] = []
    for index, param in enumerate(params):
        _check_one(param, f"$.initial_events[{index}]", self_hosted=False)
        match param:
            case UserMessageParams():
                result.append(_user_message(param))
            case UserDefineOutcomeParams():
                result.append(_define_outcome(param))
            case _:  # pragma: no cover - decode_params admitted only INITIAL_TYPES
                raise AssertionError(param.type)
    return result


def decode_params(
    raw: Sequence[msgspec.Raw], *, field: str, allowed: Sequence[str]
) -> list[EventParams]:
    """Decode each raw event as params, refusing types outside `allowed`.

    Messages carry the msgspec-style path `$.<field>[i]…`.
    """
    params: list[EventParams] = []
    for index, item in enumerate(raw):
        where = f"$.{field}[{index}]"
        try:
            param: EventParams = _decode_params(item)
        except msgspec.ValidationError as exc:
            event_type = _probe_type(item)
            if event_type is not None and event_type not in allowed:
                raise _not_sendable(event_type, field, allowed, where) from exc
            message = _with_path(_explain(str(exc), event_type), where)
            raise InvalidInputError(message, code="invalid_event") from exc
        except msgspec.DecodeError as exc:  # only reachable for hand-built Raw values
            raise InvalidInputError(f"{exc} - at `{where}`", code="invalid_event") from exc
        if param.type not in allowed:
            raise _not_sendable(param.type, field, allowed, where)
        params.append(param)
    return params


def check_batch(params: Sequence[EventParams], *, self_hosted: bool) -> None:
    """The rules of one send that types cannot express; raises InvalidInputError."""
    if not params:
        raise InvalidInputError(
            "events: at least one event is required - at `$.events`", code="invalid_event"
        )
    if sum(isinstance(p, SystemMessageParams) for p in params) > 1:
        raise InvalidInputError(
            "at most one system.message is allowed per request - at `$.events`",
            code="invalid_event",
        )
    for index, param in enumerate(params):
        where = f"$.events[{index}]"
        _check_one(param, where, self_hosted=self_hosted)
        if isinstance(param, SystemMessageParams):
            if index != len(params) - 1:
                raise InvalidInputError(
                    f"system.message must be the last event of a request - at `{where}`",
                    code="invalid_event",
                )
            if index == 0 or not isinstance(params[index - 1], _AFTER_SYSTEM_MESSAGE):
                raise InvalidInputError(
                    "system.message must directly follow a user.message, user.tool_result "
                    f"or user.custom_tool_result in the same request - at `{where}`",
                    code="invalid_event",
                )


def to_event(param: EventParams) -> ev.UserEvent:
    """The event a checked param becomes (define_outcome gets its `outcome_id` here)."""
    match param:
        case UserMessageParams():
            return _user_message(param)
        case UserInterruptParams(session_thread_id=thread_id):
            return ev.UserInterrupt(session_thread_id=thread_id)
        case UserToolConfirmationParams():
            return ev.UserToolConfirmation(
                result=param.result,
                tool_use_id=param.tool_use_id,
                deny_message=param.deny_message,
            )
        case UserCustomToolResultParams():
            return ev.UserCustomToolResult(
                custom_tool_use_id=param.custom_tool_use_id,
                content=param.content,
                is_error=param.is_error,
            )
        case UserToolResultParams():
            return ev.UserToolResult(
                tool_use_id=param.tool_use_id, content=param.content, is_error=param.is_error
            )
        case UserDefineOutcomeParams():
            return _define_outcome(param)
        case SystemMessageParams():
            return ev.SystemMessage(content=param.content)


# -- private helpers ----------------------------------------------------------------------


def _check_one(param: EventParams, where: str, *, self_hosted: bool) -> None:
    def fail(message: str, path: str = "", code: str = "invalid_event") -> NoReturn:
        raise InvalidInputError(f"{message} - at `{where}{path}`", code=code)

    match param:
        case UserMessageParams(content=content) | SystemMessageParams(content=content):
            if not content:
                fail(f"{param.type} needs at least one content block", ".content")
        case UserToolConfirmationParams(result="allow", deny_message=message) if (
            message is not None
        ):
            fail('deny_message is only allowed when result is "deny"', ".deny_message")
        case UserToolResultParams() if not self_hosted:
            fail(
                "user.tool_result is only valid on self_hosted environments",
                ".type",
                code="event_not_sendable",
            )
        case UserDefineOutcomeParams(max_iterations=limit, rubric=rubric):
            if limit is not None and not 1 <= limit <= MAX_ITERATIONS_LIMIT:
                fail(
                    f"max_iterations must be between 1 and {MAX_ITERATIONS_LIMIT}",
                    ".max_iterations",
                )
            if isinstance(rubric, ev.TextRubric) and len(rubric.content) > RUBRIC_MAX_CHARS:
                fail(
                    f"rubric content is longer than {RUBRIC_MAX_CHARS} characters",
                    ".rubric.content",
                )


def _user_message(param: UserMessageParams) -> ev.UserMessage:
    return ev.UserMessage(content=param.content)


def _define_outcome(param: UserDefineOutcomeParams) -> ev.UserDefineOutcome:
    return ev.UserDefineOutcome(
        description=param.description,
        rubric=param.rubric,
        max_iterations=param.max_iterations or MAX_ITERATIONS_DEFAULT,
        outcome_id=new_id("outc"),
    )


def _probe_type(item: msgspec.Raw) -> str | None:
    """The event's `type` if it is a JSON object with a string type, else None."""
    try:
        return _decode_probe(item).type
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _not_sendable(
    event_type: str, field: str, allowed: Sequence[str], where: str
) -> InvalidInputError:
    if event_type in SENDABLE_TYPES:
        problem = f"{event_type!r} events are not allowed here"
    elif event_type in ev.EVENT_TYPES:
        problem = f"{event_type!r} events are produced by the server and cannot be sent"
    else:
        problem = f"unknown event type {event_type!r}"
    return InvalidInputError(
        f"{problem}; {field} may contain only {', '.join(allowed)} - at `{where}.type`",
        code="event_not_sendable",
    )


def _explain(message: str, event_type: str | None) -> str:
    """Say plainly when a content block is of a kind this event may not carry."""
    match = _BLOCK_REFUSED.fullmatch(message)
    if match is None or event_type is None:
        return message
    return (
        f"{match['block']!r} blocks are not allowed in {event_type} content - at `${match['path']}`"
    )


def _with_path(message: str, where: str) -> str:
    """Re-root a msgspec message's `$…` path under `where` (the event's place in the body)."""
    head, sep, path = message.rpartition(" - at `$")
    if sep:
        return f"{head} - at `{where}{path}"
    return f"{message} - at `{where}`"
