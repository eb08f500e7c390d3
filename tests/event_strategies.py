"""Hypothesis strategies for session events, built from the msgspec types themselves.

`st.from_type` almost works on our Structs, but cannot draw `dict[str, Any]` (tool inputs)
or `msgspec.Raw`, and its unbounded ints overflow JSON's int64. So `strategy_for` walks the
type hints by hand and falls back to `st.from_type` only for leaves it does not know.
Every drawn value is valid for the SDK's own models too (the SDK cross-check relies on it).
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import msgspec
from hypothesis import strategies as st

from sessiond.runtime.wire import events as ev
from sessiond.store.clock import format_ts

AGENT_SNAPSHOT = (
    b'{"id":"agent_01","type":"agent","version":1,"name":"helper","description":null,'
    b'"system":null,"model":{"id":"claude-sonnet-4-5"},"tools":[],"mcp_servers":[],'
    b'"skills":[],"execution_identity":{"type":"service_account"},"multiagent":null}'
)
"""A minimal SessionAgent the SDK accepts, for `session.updated.agent` (opaque to us)."""

_text = st.text(st.characters(codec="utf-8"), max_size=8)
_json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_LEAVES: dict[object, st.SearchStrategy[Any]] = {
    str: _text,
    int: st.integers(0, 2**31),
    float: st.floats(0, 1e7, allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    type(None): st.none(),
    msgspec.UnsetType: st.just(msgspec.UNSET),
    msgspec.Raw: st.just(msgspec.Raw(AGENT_SNAPSHOT)),
    Any: _json_value,
}
_STORE_ASSIGNED = frozenset({"id", "processed_at"})


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of the msgspec type `tp` (Structs, unions, literals, lists, dicts, leaves)."""
    if tp in _LEAVES:
        return _LEAVES[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return strategy_for(args[0])
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct(tp)
    return st.from_type(tp)


@cache
def _struct(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {
        name: _deferred(hint)
        for name, hint in hints.items()
        if name in cls.__struct_fields__ and name not in _STORE_ASSIGNED
    }
    return st.builds(cls, **fields)


def _deferred(hint: Any) -> st.SearchStrategy[Any]:
    """Resolve lazily: nested types may refer back to the Struct being built."""
    return st.deferred(lambda: strategy_for(hint))


def events_of(cls: type[ev.EventBase]) -> st.SearchStrategy[ev.SessionEvent]:
    """Unstored events of one type (no id, no timestamp)."""
    return strategy_for(cls)


session_events: st.SearchStrategy[ev.SessionEvent] = strategy_for(ev.SessionEvent)
"""Unstored events of any type a log may hold."""

_START = datetime(2026, 5, 1, 12, tzinfo=UTC)


@st.composite
def stored_logs(
    draw: st.DrawFn,
    events: st.SearchStrategy[ev.SessionEvent] = session_events,
    max_size: int = 30,
) -> list[ev.SessionEvent]:
    """A log as the store hands it out: ids `sevt_<n>` and non-decreasing timestamps."""
    drawn = draw(st.lists(events, max_size=max_size))
    gaps = draw(st.lists(st.integers(0, 10**8), min_size=len(drawn), max_size=len(drawn)))
    log: list[ev.SessionEvent] = []
    moment = _START
    for index, (event, gap_us) in enumerate(zip(drawn, gaps, strict=True)):
        moment += timedelta(microseconds=gap_us)
        log.append(
            msgspec.structs.replace(
                event, id=f"sevt_{index + 1:04d}", processed_at=format_ts(moment)
            )
        )
    return log
