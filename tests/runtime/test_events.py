"""The event catalogue: complete against the SDK, and every type round-trips through the store."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pydantic
import pytest
from anthropic._models import BaseModel as SDKModel
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSessionEvent,
    BetaManagedAgentsSessionEventType,
    BetaManagedAgentsStreamSessionEvents,
)
from event_strategies import events_of, strategy_for
from hypothesis import given
from hypothesis import strategies as st

from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import ImageBlock, TextBlock, URLSource
from sessiond.runtime.wire.encoding import (
    decode_event,
    decode_stored,
    encode_body,
    encode_preview,
    to_wire,
)
from sessiond.runtime.wire.error_objects import ModelOverloadedErrorObject, RetryStatusRetrying
from sessiond.runtime.wire.usage import SpanModelUsage
from sessiond.store.protocol import StoredEvent

_SDK_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(BetaManagedAgentsSessionEvent)
_SDK_STREAM: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(BetaManagedAgentsStreamSessionEvents)
_decode_stream = msgspec.json.Decoder(ev.StreamEvent).decode
_RECORDED_AT = "2026-05-01T12:00:00.123456Z"


def _sdk_classes(union: object) -> dict[str, type[SDKModel]]:
    """The SDK's model class for each tag of a discriminated union."""
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(cls.model_fields["type"].annotation)[0]: cls for cls in members}


_SDK_EVENT_CLASSES = _sdk_classes(BetaManagedAgentsSessionEvent)
_SDK_STREAM_CLASSES = _sdk_classes(BetaManagedAgentsStreamSessionEvents)


def _tag(cls: type[msgspec.Struct]) -> str:
    return str(cls.__struct_config__.tag)


def _stored(body: bytes, event_id: str = "sevt_01") -> StoredEvent:
    return StoredEvent(
        session_id="sesn_1",
        seq=1,
        position=1,
        id=event_id,
        type="x",
        data=body,
        recorded_at=_RECORDED_AT,
    )


def _extras(value: object) -> list[str]:
    """Names of fields the SDK did not recognise anywhere inside a parsed model."""
    found: list[str] = []
    if isinstance(value, SDKModel):
        found += [f"{type(value).__name__}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            found += _extras(item)
    return found


# -- the catalogue against the SDK ---------------------------------------------------------


def test_log_event_types_are_exactly_the_sdk_event_types() -> None:
    assert ev.EVENT_TYPES == set(typing.get_args(BetaManagedAgentsSessionEventType))
    assert len(ev.EVENT_TYPES) == len(typing.get_args(ev.SessionEvent)) == 41


def test_stream_union_matches_the_sdk_stream_union() -> None:
    ours = {_tag(cls) for cls in typing.get_args(ev.StreamEvent)}
    assert ours == set(_SDK_STREAM_CLASSES)
    assert set(_SDK_EVENT_CLASSES) == ev.EVENT_TYPES | {"session.deleted"}


_OUR_EXTENSIONS = {"session.usage": {"list_cost_micro_usd"}}
"""Fields we add to a contract event: optional, so the SDK (which keeps unknown fields as
extras) reads them unchanged."""


@pytest.mark.parametrize("tag", sorted(_SDK_EVENT_CLASSES))
def test_fields_match_the_sdk_model(tag: str) -> None:
    ours = ev.EVENT_CLASSES.get(tag, ev.SessionDeleted)
    assert _tag(ours) == tag
    sdk = _SDK_EVENT_CLASSES[tag]
    extensions = _OUR_EXTENSIONS.get(tag, set())
    assert set(ours.__struct_fields__) - extensions == set(sdk.model_fields) - {"type"}
    # A field we may leave out of the JSON must be optional for the SDK (id and
    # processed_at are always spliced in by to_wire).
    for field in msgspec.structs.fields(ours):
        if field.name in extensions:
            assert field.default is None, field.name
            continue
        if field.required or field.name in {"id", "processed_at"}:
            continue
        assert not sdk.model_fields[field.name].is_required(), field.name


@pytest.mark.parametrize("cls", [*ev.EVENT_CLASSES.values(), ev.SessionDeleted])
def test_events_are_frozen_keyword_only_and_tolerate_unknown_fields(
    cls: type[ev.EventBase],
) -> None:
    config = cls.__struct_config__
    assert config.frozen and not config.forbid_unknown_fields and config.tag_field == "type"
    if any(f.required for f in msgspec.structs.fields(cls)):
        with pytest.raises(TypeError):
            cls("positional")  # type: ignore[call-arg]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(ev.EVENT_CLASSES))
@given(data=st.data())
def test_every_event_type_round_trips_through_store_and_wire(tag: str, data: st.DataObject) -> None:
    event = data.draw(events_of(ev.EVENT_CLASSES[tag]))
    body = encode_body(event)
    as_dict = msgspec.json.decode(body)
    assert as_dict["type"] == tag and "id" not in as_dict and "processed_at" not in as_dict

    stored = _stored(body)
    wire = to_wire(stored)
    assert msgspec.json.decode(wire) == {"id": "sevt_01", "processed_at": _RECORDED_AT, **as_dict}
    expected = msgspec.structs.replace(event, id="sevt_01", processed_at=_RECORDED_AT)
    assert decode_stored(stored) == expected
    assert decode_event(wire) == expected
    assert encode_body(expected) == body

    parsed = _SDK_EVENTS.validate_json(wire)
    assert type(parsed) is _SDK_EVENT_CLASSES[tag]
    ours = {f"{type(parsed).__name__}.{name}" for name in _OUR_EXTENSIONS.get(tag, ())}
    assert parsed.model_dump()["id"] == "sevt_01" and set(_extras(parsed)) <= ours


@given(event=strategy_for(ev.SessionEvent))
def test_any_event_round_trips(event: ev.SessionEvent) -> None:
    stored = _stored(encode_body(event), event_id="sevt_x")
    assert decode_stored(stored) == msgspec.structs.replace(
        event, id="sevt_x", processed_at=_RECORDED_AT
    )


@given(preview=strategy_for(ev.StreamPreview))
def test_previews_encode_for_the_sdk_stream(preview: ev.EventStart | ev.EventDelta) -> None:
    wire = encode_preview(preview)
    assert _decode_stream(wire) == preview
    parsed = _SDK_STREAM.validate_json(wire)
    assert type(parsed) is _SDK_STREAM_CLASSES[_tag(type(preview))]
    assert _extras(parsed) == []


def test_session_deleted_is_a_stream_event_only() -> None:
    wire = msgspec.json.encode(ev.SessionDeleted(id="sevt_9", processed_at=_RECORDED_AT))
    assert _decode_stream(wire) == ev.SessionDeleted(id="sevt_9", processed_at=_RECORDED_AT)
    assert type(_SDK_STREAM.validate_json(wire)).__name__ == "BetaManagedAgentsSessionDeletedEvent"
    with pytest.raises(msgspec.ValidationError):
        decode_event(wire)


def test_encode_body_leaves_out_store_assigned_fields_even_when_set() -> None:
    event = ev.AgentMessage(content=[TextBlock(text="hi")], id="sevt_1", processed_at=_RECORDED_AT)
    assert encode_body(event) == b'{"type":"agent.message","content":[{"type":"text","text":"hi"}]}'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{}", {}),
        (b"{ \n}", {}),
        (b'{ "type" : "agent.thinking" }', {"type": "agent.thinking"}),
        (b'{\n"type":"agent.thinking"}', {"type": "agent.thinking"}),
    ],
)
def test_to_wire_splices_into_any_json_object(body: bytes, expected: dict[str, Any]) -> None:
    wire = to_wire(_stored(body))
    assert msgspec.json.decode(wire) == {"id": "sevt_01", "processed_at": _RECORDED_AT, **expected}


def test_to_wire_refuses_a_body_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        to_wire(_stored(b'["type"]'))


def test_to_wire_escapes_the_envelope_strings() -> None:
    stored = msgspec.structs.replace(_stored(b'{"type":"agent.thinking"}'), id='a"b\\c')
    assert msgspec.json.decode(to_wire(stored))["id"] == 'a"b\\c'


# -- schema evolution ----------------------------------------------------------------------


def test_unknown_fields_from_a_newer_release_are_ignored() -> None:
    body = (
        b'{"type":"agent.tool_use","name":"bash","input":{"command":"ls"},"future":1,'
        b'"evaluation":{"type":"auto","evaluated_permission":{"type":"ask",'
        b'"reason_code":"indeterminate","score":0.5}}}'
    )
    event = decode_stored(_stored(body))
    assert event == ev.AgentToolUse(
        id="sevt_01",
        processed_at=_RECORDED_AT,
        name="bash",
        input={"command": "ls"},
        evaluation=ev.EvaluationAuto(evaluated_permission=ev.AutoAsk(reason_code="indeterminate")),
    )


# Bodies as this release writes them: they must keep decoding to the same events.
_GOLDEN_BODIES: list[tuple[bytes, ev.SessionEvent]] = [
    (
        b'{"type":"user.message","content":[{"type":"text","text":"hi"},'
        b'{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}',
        ev.UserMessage(
            content=[
                TextBlock(text="hi"),
                ImageBlock(source=URLSource(url="https://x/y.png")),
            ]
        ),
    ),
    (
        b'{"type":"session.status_idle","stop_reason":{"type":"requires_action",'
        b'"event_ids":["sevt_7"]}}',
        ev.SessionStatusIdle(stop_reason=ev.RequiresAction(event_ids=["sevt_7"])),
    ),
    (
        b'{"type":"span.model_request_end","model_request_start_id":"sevt_3","model_usage":'
        b'{"cache_creation_input_tokens":1,"cache_read_input_tokens":2,"input_tokens":3,'
        b'"output_tokens":4},"is_error":false}',
        ev.SpanModelRequestEnd(
            model_request_start_id="sevt_3",
            model_usage=SpanModelUsage(
                cache_creation_input_tokens=1,
                cache_read_input_tokens=2,
                input_tokens=3,
                output_tokens=4,
            ),
            is_error=False,
        ),
    ),
    (
        b'{"type":"session.error","error":{"type":"model_overloaded_error",'
        b'"message":"busy","retry_status":{"type":"retrying"}}}',
        ev.SessionError(
            error=ModelOverloadedErrorObject(message="busy", retry_status=RetryStatusRetrying())
        ),
    ),
    (
        b'{"type":"session.updated","metadata":{},"title":null}',
        ev.SessionUpdated(title=None, metadata={}),
    ),
]


@pytest.mark.parametrize(("body", "event"), _GOLDEN_BODIES)
def test_bodies_of_this_release_still_decode(body: bytes, event: ev.SessionEvent) -> None:
    assert decode_stored(_stored(body)) == msgspec.structs.replace(
        event, id="sevt_01", processed_at=_RECORDED_AT
    )
    assert encode_body(event) == body
