"""Session events between Structs, stored bodies and API JSON.

The store keeps each event's body (`data`) as the event's JSON *without* `id` and
`processed_at`: those are the store's to assign (public id and `recorded_at`). The API
sends `{"id": …, "processed_at": …, <the rest of data>}`. `to_wire` builds that by splicing
bytes, so listing and streaming never decode or re-encode a stored body.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from sessiond.runtime.wire.events import EventBase, SessionEvent, StreamPreview
from sessiond.store.protocol import StoredEvent

_encode = msgspec.json.Encoder().encode
_decode_event: Callable[[bytes], SessionEvent] = msgspec.json.Decoder(SessionEvent).decode
_JSON_SPACE = b" \t\r\n"


def encode_body(event: EventBase) -> bytes:
    """The JSON body to store for `event`: its fields and `"type"`, never id or timestamp."""
    if event.id or event.processed_at is not None:
        # Event Structs omit defaults, so clearing these two leaves them out of the body.
        event = msgspec.structs.replace(event, id="", processed_at=None)
    return _encode(event)


def to_wire(stored: StoredEvent) -> bytes:
    """The API JSON of a stored event: its body with `id` and `processed_at` spliced in."""
    data = stored.data
    if data[:1] != b"{":
        raise ValueError(f"event {stored.id}: stored body is not a JSON object")
    head = b'{"id":%b,"processed_at":%b' % (_encode(stored.id), _encode(stored.recorded_at))
    start = 1
    while start < len(data) and data[start] in _JSON_SPACE:
        start += 1
    rest = memoryview(data)[start:]
    if data[start : start + 1] == b"}":
        return b"".join((head, rest))
    return b"".join((head, b",", rest))


def decode_event(wire: bytes) -> SessionEvent:
    """Decode one event's API JSON (as `to_wire` makes it, or a client received it)."""
    return _decode_event(wire)


def decode_stored(stored: StoredEvent) -> SessionEvent:
    """Decode a stored event, with its public `id` and `processed_at` filled in."""
    return _decode_event(to_wire(stored))


def encode_preview(preview: StreamPreview) -> bytes:
    """The JSON of a stream-only `event_start` / `event_delta` preview."""
    return _encode(preview)
