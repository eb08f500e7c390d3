"""List prices: what a session's budget is checked against and what an eval run costs.

List prices in USD per million tokens, as published by the providers in 2026; they change,
so a suite can override any of them (`pricing:` in the suite file, matched first). A model
with no price gets no cost (None), never a guessed one. Prompt-cache tokens are priced as
Anthropic lists them: a cache write at 1.25x the input price, a cache read at 0.1x.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

import msgspec

from sessiond.runtime.wire.usage import SpanModelUsage

CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.1


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float


LIST_PRICES: dict[str, Price] = {
    "claude-opus-4*": Price(input_per_mtok=15.0, output_per_mtok=75.0),
    "claude-opus-5*": Price(input_per_mtok=5.0, output_per_mtok=25.0),
    "claude-sonnet-*": Price(input_per_mtok=3.0, output_per_mtok=15.0),
    "claude-haiku-4*": Price(input_per_mtok=1.0, output_per_mtok=5.0),
    "claude-3-5-haiku*": Price(input_per_mtok=0.8, output_per_mtok=4.0),
    "gpt-4o-mini*": Price(input_per_mtok=0.15, output_per_mtok=0.6),
    "gpt-4o*": Price(input_per_mtok=2.5, output_per_mtok=10.0),
    "gpt-4.1-mini*": Price(input_per_mtok=0.4, output_per_mtok=1.6),
    "gpt-4.1*": Price(input_per_mtok=2.0, output_per_mtok=8.0),
    "gpt-5*": Price(input_per_mtok=1.25, output_per_mtok=10.0),
    "scripted*": Price(input_per_mtok=0.0, output_per_mtok=0.0),
}


def price_of(model: str | None, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price for `model`: overrides first, then the list, by glob."""
    if not model:
        return None
    for table in (overrides or {}, LIST_PRICES):
        for pattern, price in table.items():
            if fnmatch.fnmatchcase(model, pattern):
                return price
    return None


def cost_usd(
    model: str | None,
    input_tokens: int,
    output_tokens: int,
    overrides: Mapping[str, Price] | None = None,
) -> float | None:
    """List cost of the tokens, or None when the model's price is unknown."""
    price = price_of(model, overrides)
    if price is None:
        return None
    total = input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok
    return round(total / 1_000_000, 8)


def cost_micro_usd(model: str | None, usage: SpanModelUsage) -> int | None:
    """List cost of one model request in millionths of a dollar (a price per million
    tokens is a price in micro-dollars per token), or None when the model is unpriced."""
    price = price_of(model)
    if price is None:
        return None
    total = (
        usage.input_tokens * price.input_per_mtok
        + usage.cache_creation_input_tokens * price.input_per_mtok * CACHE_WRITE_FACTOR
        + usage.cache_read_input_tokens * price.input_per_mtok * CACHE_READ_FACTOR
        + usage.output_tokens * price.output_per_mtok
    )
    return round(total)
