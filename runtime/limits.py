"""Limits a shared server needs: the contract's own lengths, and counts an operator sets.

Lengths the contract states (system prompts up to 100,000 characters, names up to 256,
metadata at 16 keys of 64 / 512 characters) are constants: a client may rely on them
whichever server it talks to. Counts and sizes that protect one server from one tenant
are settings (`Limits`, read from `SESSIOND_MAX_*` by api/config.py), with defaults in
line with what hosted APIs allow. Every refusal names the limit it hit.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_SYSTEM_CHARS = 100_000
MAX_DESCRIPTION_CHARS = 2_048
MAX_TITLE_CHARS = 1_024
MAX_NAME_CHARS = 256

SystemPrompt = Annotated[str, msgspec.Meta(max_length=MAX_SYSTEM_CHARS)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION_CHARS)]
Title = Annotated[str, msgspec.Meta(max_length=MAX_TITLE_CHARS)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
VersionNumber = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
"""A 1-based version; the bound keeps a client's 10**30 out of the database's integers."""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-request and per-key bounds (server settings)."""

    max_events_per_send: int = 100
    """Events in one `POST /v1/sessions/{id}/events` (`SESSIOND_MAX_EVENTS_PER_SEND`)."""
    max_eval_cases: int = 1_000
    """Case sessions one eval run may start: cases x versions x repeats
    (`SESSIOND_MAX_EVAL_CASES`)."""
    max_streams_per_key: int = 1_000
    """Event streams (sessions' and eval runs') one API key may hold open at once; past it
    a new stream gets 429 (`SESSIOND_MAX_STREAMS_PER_KEY`)."""
    max_model_requests_per_turn: int = 200
    """Model requests one turn may make before it stops with `retries_exhausted` and a
    `tool_use_limit_reached_error` (`SESSIOND_MAX_MODEL_REQUESTS_PER_TURN`)."""
