"""An event-by-event diff of two sessions' logs (wire JSON objects, as the API serves them).

Ids and timestamps differ between any two runs, so events are compared on their type and
body with `id`/`processed_at` dropped and every reference to an event of the same log
replaced by that event's position (`#3`): a tool result still points at "its" call.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

_VOLATILE = ("id", "processed_at")


class EventDiff(msgspec.Struct, kw_only=True):
    """One row: an aligned pair of events, or an event only one side has."""

    op: Literal["equal", "insert", "delete", "replace"]
    left_index: int | None
    right_index: int | None
    left: str | None
    """A one-line summary of the left event."""
    right: str | None
    changes: dict[str, tuple[Any, Any]] = {}
    """For a replaced event of the same type: field → (left value, right value)."""


class SessionDiff(msgspec.Struct, kw_only=True):
    """The aligned logs."""

    rows: list[EventDiff]
    equal: int
    inserted: int
    deleted: int
    replaced: int
    first_divergence: int | None
    """Left-side index of the first difference (None when the logs match)."""


def normalise(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without ids/timestamps, with in-log references as positions."""
    position = {e.get("id"): f"#{i}" for i, e in enumerate(events) if e.get("id")}

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return position.get(value, value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if k not in _VOLATILE}
        return value

    return [walk(e) for e in events]


def summary(event: dict[str, Any]) -> str:
    """`type: short text` for a row."""
    kind = str(event.get("type", "?"))
    content = event.get("content")
    if isinstance(content, list):
        text = "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        if text:
            return f"{kind}: {text[:120]}"
    if "name" in event:
        return f"{kind}: {event['name']}({json.dumps(event.get('input', {}))[:100]})"
    stop = event.get("stop_reason")
    if isinstance(stop, dict):
        return f"{kind}: {stop.get('type')}"
    return kind


def _changes(left: dict[str, Any], right: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {
        key: (left.get(key), right.get(key))
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    }


def diff_sessions(left: Sequence[dict[str, Any]], right: Sequence[dict[str, Any]]) -> SessionDiff:
    """Align two logs (difflib on normalised events) and describe every difference."""
    a, b = normalise(left), normalise(right)
    keys_a = [json.dumps(e, sort_keys=True) for e in a]
    keys_b = [json.dumps(e, sort_keys=True) for e in b]
    matcher = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
    rows: list[EventDiff] = []
    counts = {"equal": 0, "insert": 0, "delete": 0, "replace": 0}
    first: int | None = None
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op != "equal" and first is None:
            first = i1
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                rows.append(
                    EventDiff(
                        op="equal",
                        left_index=i,
                        right_index=j,
                        left=summary(left[i]),
                        right=summary(right[j]),
                    )
                )
        elif op == "replace":
            span = max(i2 - i1, j2 - j1)
            for k in range(span):
                at_left = i1 + k if i1 + k < i2 else None
                at_right = j1 + k if j1 + k < j2 else None
                if at_left is not None and at_right is not None:
                    same_type = a[at_left].get("type") == b[at_right].get("type")
                    rows.append(
                        EventDiff(
                            op="replace",
                            left_index=at_left,
                            right_index=at_right,
                            left=summary(left[at_left]),
                            right=summary(right[at_right]),
                            changes=_changes(a[at_left], b[at_right]) if same_type else {},
                        )
                    )
                    counts["replace"] += 1
                elif at_left is not None:
                    rows.append(
                        EventDiff(
                            op="delete",
                            left_index=at_left,
                            right_index=None,
                            left=summary(left[at_left]),
                            right=None,
                        )
                    )
                    counts["delete"] += 1
                else:
                    assert at_right is not None
                    rows.append(
                        EventDiff(
                            op="insert",
                            left_index=None,
                            right_index=at_right,
                            left=None,
                            right=summary(right[at_right]),
                        )
                    )
                    counts["insert"] += 1
            continue
        elif op == "delete":
            for i in range(i1, i2):
                rows.append(
                    EventDiff(
                        op="delete",
                        left_index=i,
                        right_index=None,
                        left=summary(left[i]),
                        right=None,
                    )
                )
        elif op == "insert":
            for j in range(j1, j2):
                rows.append(
                    EventDiff(
                        op="insert",
                        left_index=None,
                        right_index=j,
                        left=None,
                        right=summary(right[j]),
                    )
                )
        counts[op] += (i2 - i1) if op in ("equal", "delete") else (j2 - j1)
    return SessionDiff(
        rows=rows,
        equal=counts["equal"],
        inserted=counts["insert"],
        deleted=counts["delete"],
        replaced=counts["replace"],
        first_divergence=first,
    )
