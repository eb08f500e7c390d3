"""Token usage, list cost and budgets as they appear in session events and the session.

`SpanModelUsage` is one model request's usage (`span.model_request_end`) or one grading
cycle's (`span.outcome_evaluation_end`). `SessionUsageSnapshot` is a session's cumulative
usage: the snapshot a `session.usage` event carries, and the `usage` of the Session object
(the SDK's `BetaManagedAgentsSessionUsageSnapshot` and `…SessionUsage` have the same fields,
so they share this Struct). Its fields are optional on the wire; the fold fills the token
counts with numbers.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from sessiond.store.errors import InvalidInputError


class MonetaryAmount(msgspec.Struct, frozen=True, kw_only=True):
    """An amount of money in integer minor units, as a string (`"2500"` is $25.00)."""

    amount: str
    """No sign, no leading zeros (checked where a client gives one: `check_budget`)."""
    currency: Literal["USD"]


class BudgetLimit(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="limit"):
    """A hard spend ceiling on a session's tracked list cost."""

    max_list_cost: MonetaryAmount


_AMOUNT = re.compile(r"0|[1-9][0-9]{0,14}")


def check_budget(budget: BudgetLimit | None) -> None:
    """A client's budget must be whole minor units (`"2500"`, not `"25.00"`): the engine
    compares it as an integer. Checked at the edge only, so logs keep decoding whatever
    they hold."""
    if budget is not None and not _AMOUNT.fullmatch(budget.max_list_cost.amount):
        raise InvalidInputError(
            'budget.max_list_cost.amount: a whole number of cents as a string, like "2500"',
            code="invalid_budget",
        )


class CacheCreationUsage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Prompt-cache creation tokens, by cache lifetime."""

    ephemeral_1h_input_tokens: int | None = None
    ephemeral_5m_input_tokens: int | None = None


class ServerToolUsage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Counts of server-executed tool calls, by tool."""

    web_fetch_requests: int | None = None
    web_search_requests: int | None = None


class SpanModelUsage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Token usage of one model request (or the sum over one grading cycle)."""

    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    input_tokens: int
    output_tokens: int
    speed: Literal["standard", "fast"] | None = None
    """Only present when the fast-mode beta is active."""


class SessionUsageSnapshot(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Cumulative usage of a session across all turns."""

    active_seconds: float | None = None
    """Time during which at least one thread was running (what runtime cost is priced on)."""
    cache_creation: CacheCreationUsage | None = None
    cache_read_input_tokens: int | None = None
    input_tokens: int | None = None
    list_cost: MonetaryAmount | None = None
    """Absent until cost tracking is available for the session."""
    output_tokens: int | None = None
    server_tool_use: ServerToolUsage | None = None
    """Absent until server-tool tracking is available for the session."""
