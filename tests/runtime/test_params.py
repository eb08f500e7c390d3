"""What a client may send, and the rules of a send that the types alone cannot express."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest
from anthropic.types.beta.sessions import BetaManagedAgentsEventParams
from event_strategies import strategy_for
from hypothesis import given
from hypothesis import strategies as st

from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire import params as pm
from sessiond.runtime.wire.content import SearchResultBlock, TextBlock
from sessiond.runtime.wire.encoding import decode_stored, encode_body
from sessiond.store.errors import InvalidInputError
from sessiond.store.protocol import StoredEvent

_decode_send = msgspec.json.Decoder(pm.SendEvents).decode

TEXT = [{"type": "text", "text": "hi"}]
SEARCH = [
    {
        "type": "search_result",
        "source": "https://example.com",
        "title": "t",
        "content": TEXT,
        "citations": {"enabled": True},
    }
]
SENDABLE: dict[str, dict[str, Any]] = {
    "user.message": {"type": "user.message", "content": TEXT},
    "user.interrupt": {"type": "user.interrupt"},
    "user.tool_confirmation": {
        "type": "user.tool_confirmation",
        "tool_use_id": "sevt_1",
        "result": "deny",
        "deny_message": "not now",
    },
    "user.custom_tool_result": {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": "sevt_2",
        "content": SEARCH,
        "is_error": False,
    },
    "user.tool_result": {"type": "user.tool_result", "tool_use_id": "sevt_3", "content": TEXT},
    "user.define_outcome": {
        "type": "user.define_outcome",
        "description": "a haiku",
        "rubric": {"type": "text", "content": "5-7-5"},
    },
    "system.message": {"type": "system.message", "content": TEXT},
}
USER_MESSAGE = SENDABLE["user.message"]
SYSTEM_MESSAGE = SENDABLE["system.message"]


def send(*events: object, self_hosted: bool = True) -> list[ev.UserEvent]:
    batch = _decode_send(msgspec.json.encode({"events": list(events)}))
    return pm.validate_send(batch, self_hosted=self_hosted)


def refused(*events: object, self_hosted: bool = True) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        send(*events, self_hosted=self_hosted)
    return caught.value


def initial(*events: object) -> list[ev.UserMessage | ev.UserDefineOutcome]:
    return pm.validate_initial_events([msgspec.Raw(msgspec.json.encode(e)) for e in events])


# -- the seven sendable types --------------------------------------------------------------


def test_our_params_are_the_sdk_params() -> None:
    for sdk in typing.get_args(BetaManagedAgentsEventParams):
        hints = typing.get_type_hints(sdk, include_extras=True)
        sdk_required = {k for k, v in hints.items() if typing.get_origin(v) is typing.Required}
        tag = typing.get_args(typing.get_args(hints["type"])[0])[0]
        ours = next(c for c in typing.get_args(pm.EventParams) if c.__struct_config__.tag == tag)
        assert set(ours.__struct_fields__) | {"type"} == set(hints)
        required = {f.name for f in msgspec.structs.fields(ours) if f.required}
        assert required | {"type"} == sdk_required
    assert set(pm.SENDABLE_TYPES) == set(SENDABLE)


@pytest.mark.parametrize("tag", sorted(SENDABLE))
def test_each_sendable_type_is_accepted_and_becomes_its_event(tag: str) -> None:
    before = [USER_MESSAGE] if tag == "system.message" else []
    events = send(*before, SENDABLE[tag])
    event = events[-1]
    assert type(event) is ev.EVENT_CLASSES[tag]
    assert event.id == "" and event.processed_at is None
    body = msgspec.json.decode(encode_body(event))
    assert body == {**SENDABLE[tag], **body}  # every field the client sent is kept


def test_define_outcome_gets_an_outcome_id_and_default_iterations() -> None:
    [outcome] = send(SENDABLE["user.define_outcome"])
    assert isinstance(outcome, ev.UserDefineOutcome)
    assert outcome.outcome_id.startswith("outc_") and outcome.max_iterations == 3
    [again] = send(SENDABLE["user.define_outcome"])
    assert isinstance(again, ev.UserDefineOutcome) and again.outcome_id != outcome.outcome_id


@pytest.mark.parametrize(("limit", "ok"), [(0, False), (1, True), (20, True), (21, False)])
def test_max_iterations_is_1_to_20(limit: int, ok: bool) -> None:
    event = {**SENDABLE["user.define_outcome"], "max_iterations": limit}
    if ok:
        [outcome] = send(event)
        assert isinstance(outcome, ev.UserDefineOutcome) and outcome.max_iterations == limit
    else:
        assert "`$.events[0].max_iterations`" in str(refused(event))


@pytest.mark.parametrize(
    ("length", "ok"), [(pm.RUBRIC_MAX_CHARS, True), (pm.RUBRIC_MAX_CHARS + 1, False)]
)
def test_text_rubric_length_limit(length: int, ok: bool) -> None:
    event = {**SENDABLE["user.define_outcome"], "rubric": {"type": "text", "content": "é" * length}}
    if ok:
        assert len(send(event)) == 1
    else:
        assert "`$.events[0].rubric.content`" in str(refused(event))


def test_file_rubric_is_accepted() -> None:
    [outcome] = send(
        {**SENDABLE["user.define_outcome"], "rubric": {"type": "file", "file_id": "f"}}
    )
    assert isinstance(outcome, ev.UserDefineOutcome) and outcome.rubric == ev.FileRubric(
        file_id="f"
    )


# -- what may not be sent ------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(ev.EVENT_TYPES - set(SENDABLE)))
def test_server_only_types_are_not_sendable(tag: str) -> None:
    error = refused(USER_MESSAGE, {"type": tag})
    assert error.code == "event_not_sendable"
    assert f"{tag!r} events are produced by the server" in error.message
    assert "`$.events[1].type`" in error.message


@given(event=strategy_for(ev.SessionEvent))
def test_no_stored_server_event_is_accepted_as_a_send(event: ev.SessionEvent) -> None:
    raw = msgspec.Raw(encode_body(event))
    if event.type in SENDABLE:
        return
    with pytest.raises(InvalidInputError, match="produced by the server"):
        pm.validate_send(pm.SendEvents(events=[raw]), self_hosted=True)


def test_unknown_types_and_missing_types_are_refused() -> None:
    assert "unknown event type 'nope'" in refused({"type": "nope"}).message
    assert refused({"content": TEXT}).message == (
        "Object missing required field `type` - at `$.events[0]`"
    )
    assert refused(5).message == "Expected `object`, got `int` - at `$.events[0]`"


def test_unknown_fields_fail_with_their_path() -> None:
    error = refused(USER_MESSAGE, {**USER_MESSAGE, "contnet": TEXT})
    assert error.code == "invalid_event"
    assert error.message == "Object contains unknown field `contnet` - at `$.events[1]`"
    with pytest.raises(msgspec.ValidationError, match="unknown field `event`"):
        _decode_send(b'{"event": []}')


def test_nested_shape_errors_keep_their_full_path() -> None:
    error = refused({"type": "user.message", "content": [{"type": "text"}]})
    assert error.message == "Object missing required field `text` - at `$.events[0].content[0]`"
    bad_source = {"type": "image", "source": {"type": "text", "data": "x"}}
    assert (
        "`$.events[0].content[0].source.type`"
        in refused({"type": "user.message", "content": [bad_source]}).message
    )


def test_an_empty_send_is_refused() -> None:
    assert refused().message.startswith("events: at least one event is required")


@pytest.mark.parametrize("tag", ["user.message", "system.message"])
def test_messages_need_content(tag: str) -> None:
    before = [USER_MESSAGE] if tag == "system.message" else []
    index = len(before)
    error = refused(*before, {"type": tag, "content": []})
    assert f"`$.events[{index}].content`" in error.message


# -- content blocks by event type ----------------------------------------------------------


@pytest.mark.parametrize("tag", ["user.tool_result", "user.custom_tool_result"])
def test_search_results_are_allowed_in_tool_results(tag: str) -> None:
    [result] = send({**SENDABLE[tag], "content": SEARCH})
    assert isinstance(result, ev.UserToolResult | ev.UserCustomToolResult)
    assert result.content is not None and isinstance(result.content[0], SearchResultBlock)


def test_search_results_are_refused_in_user_messages() -> None:
    error = refused({"type": "user.message", "content": SEARCH})
    assert error.message == (
        "'search_result' blocks are not allowed in user.message content"
        " - at `$.events[0].content[0].type`"
    )


@pytest.mark.parametrize(
    ("event", "block"),
    [
        ({**SENDABLE["user.tool_result"], "content": [{"type": "redacted"}]}, "redacted"),
        (
            {
                "type": "system.message",
                "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
            },
            "image",
        ),
    ],
)
def test_blocks_outside_their_context_are_refused(event: dict[str, Any], block: str) -> None:
    before = [USER_MESSAGE] if event["type"] == "system.message" else []
    assert f"{block!r} blocks are not allowed in {event['type']}" in refused(*before, event).message


# -- rules across a batch ------------------------------------------------------------------


@pytest.mark.parametrize("before", ["user.message", "user.tool_result", "user.custom_tool_result"])
def test_system_message_may_follow_a_user_turn(before: str) -> None:
    events = send(SENDABLE[before], SYSTEM_MESSAGE)
    assert [e.type for e in events] == [before, "system.message"]


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([SYSTEM_MESSAGE], "must directly follow"),
        ([SENDABLE["user.interrupt"], SYSTEM_MESSAGE], "must directly follow"),
        ([SENDABLE["user.define_outcome"], SYSTEM_MESSAGE], "must directly follow"),
        ([USER_MESSAGE, SYSTEM_MESSAGE, USER_MESSAGE], "must be the last event"),
        ([USER_MESSAGE, SYSTEM_MESSAGE, USER_MESSAGE, SYSTEM_MESSAGE], "at most one"),
    ],
)
def test_system_message_placement(batch: list[dict[str, Any]], message: str) -> None:
    assert message in refused(*batch).message


@pytest.mark.parametrize(
    ("result", "deny_message", "ok"),
    [("deny", "no", True), ("deny", None, True), ("allow", None, True), ("allow", "no", False)],
)
def test_deny_message_only_with_deny(result: str, deny_message: str | None, ok: bool) -> None:
    event: dict[str, Any] = {"type": "user.tool_confirmation", "tool_use_id": "t", "result": result}
    event["deny_message"] = deny_message
    if ok:
        [confirmation] = send(event)
        assert isinstance(confirmation, ev.UserToolConfirmation)
        assert (confirmation.result, confirmation.deny_message) == (result, deny_message)
    else:
        error = refused(event)
        assert error.message.endswith("- at `$.events[0].deny_message`")


def test_tool_results_need_a_self_hosted_environment() -> None:
    error = refused(SENDABLE["user.tool_result"], self_hosted=False)
    assert error.code == "event_not_sendable" and "self_hosted" in error.message
    assert len(send(SENDABLE["user.tool_result"], self_hosted=True)) == 1
    # Custom tool results are the client's on any environment.
    assert len(send(SENDABLE["user.custom_tool_result"], self_hosted=False)) == 1


@given(params=st.lists(strategy_for(pm.EventParams), max_size=5), self_hosted=st.booleans())
def test_any_batch_is_accepted_whole_or_refused_cleanly(
    params: list[pm.EventParams], self_hosted: bool
) -> None:
    raw = [msgspec.Raw(msgspec.json.encode(p)) for p in params]
    try:
        events = pm.validate_send(pm.SendEvents(events=raw), self_hosted=self_hosted)
    except InvalidInputError as error:
        assert error.code in {"invalid_event", "event_not_sendable"}
        assert "- at `$.events" in error.message
        return
    assert [e.type for e in events] == [p.type for p in params]
    for index, event in enumerate(events):
        stored = StoredEvent(
            session_id="s",
            seq=index + 1,
            position=index + 1,
            id=f"sevt_{index}",
            type=event.type,
            data=encode_body(event),
            recorded_at="2026-05-01T12:00:00.000000Z",
        )
        assert decode_stored(stored) == msgspec.structs.replace(
            event, id=f"sevt_{index}", processed_at="2026-05-01T12:00:00.000000Z"
        )


def test_to_event_copies_every_field() -> None:
    param = pm.UserCustomToolResultParams(
        custom_tool_use_id="c", content=[TextBlock(text="r")], is_error=True
    )
    assert pm.to_event(param) == ev.UserCustomToolResult(
        custom_tool_use_id="c", content=[TextBlock(text="r")], is_error=True
    )


# -- initial events ------------------------------------------------------------------------


def test_initial_events_allow_messages_and_outcomes_only() -> None:
    events = initial(USER_MESSAGE, SENDABLE["user.define_outcome"])
    assert [e.type for e in events] == ["user.message", "user.define_outcome"]
    assert initial() == []
    for tag in ("user.interrupt", "system.message", "user.tool_result", "agent.message"):
        with pytest.raises(InvalidInputError) as caught:
            initial(USER_MESSAGE, SENDABLE.get(tag, {"type": tag}))
        assert caught.value.code == "event_not_sendable"
        assert caught.value.message.startswith(f"{tag!r} events are ")
        assert "`$.initial_events[1].type`" in caught.value.message
        server_only = "produced by the server" in caught.value.message
        assert server_only == (tag not in SENDABLE)


def test_initial_events_are_at_most_50_and_checked() -> None:
    assert len(initial(*[USER_MESSAGE] * 50)) == 50
    with pytest.raises(InvalidInputError, match="at most 50"):
        initial(*[USER_MESSAGE] * 51)
    with pytest.raises(InvalidInputError, match=r"`\$\.initial_events\[0\]\.max_iterations`"):
        initial({**SENDABLE["user.define_outcome"], "max_iterations": 99})
