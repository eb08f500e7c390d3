"""Timestamps and ids shared by every layer.

Timestamps are UTC RFC 3339 strings of fixed width (`2026-05-01T12:00:00.123456Z`), so
string order is time order: the store can compare and index them as text and the API
can send them without re-formatting.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_PAIRS = [a + b for a in _B32 for b in _B32]  # every 10-bit value as two chars
_SHIFTS = range(70, -10, -10)  # the 80 random bits
_MS_SHIFTS = range(40, -10, -10)  # the 48-bit time, as the first 50 bits of 130
_RAND_MASK = (1 << 80) - 1
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_ms_chars = ""


def format_ts(dt: datetime) -> str:
    """Format an aware (or naive-as-UTC) datetime in the canonical fixed-width form."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_ts() -> str:
    """The current time in the canonical form."""
    return format_ts(datetime.now(UTC))


def parse_ts(text: str) -> str:
    """Parse a client timestamp leniently (naive means UTC) into the canonical form.

    Raises ValueError on text that is not a timestamp, or one outside the years 1000-9999
    (the fixed-width form, whose text order is time order, has four-digit years).
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        try:
            dt = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError) as exc:  # 1e18 seconds, nan, inf
            raise ValueError(f"timestamp out of range: {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        dt = dt.astimezone(UTC)
    except OverflowError as exc:  # year 9999 with a negative offset
        raise ValueError(f"timestamp out of range: {text!r}") from exc
    if dt.year < 1000:
        raise ValueError(f"timestamp out of range: {text!r}")
    return format_ts(dt)


def later(timestamp: str, seconds: float) -> str:
    """The canonical timestamp `seconds` after `timestamp` (a canonical one)."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return format_ts(moment + timedelta(seconds=seconds))


def new_id(prefix: str) -> str:
    """A time-sortable unique id: `<prefix>_` + 26 chars (48-bit ms time, 80 random bits).

    Within one millisecond the random part is incremented, as ULID does, so ids made by
    one process sort in creation order.
    """
    global _last_ms, _last_rand, _ms_chars
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _last_rand = (_last_rand + 1) & _RAND_MASK
        else:
            _last_ms = ms
            _last_rand = int.from_bytes(os.urandom(10), "big") >> 1
            # The first 10 chars hold the time alone: made once per millisecond.
            _ms_chars = "".join([_PAIRS[(ms >> shift) & 1023] for shift in _MS_SHIFTS])
        rand = _last_rand
        head = _ms_chars
    # The last 16 chars as 8 lookups of 10 bits each (a char-by-char loop cost 10 us).
    return prefix + "_" + head + "".join([_PAIRS[(rand >> shift) & 1023] for shift in _SHIFTS])
