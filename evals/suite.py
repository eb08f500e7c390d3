"""Suite files: cases (input, tool answers, scorers, repeats) in YAML or JSON.

    name: greeting
    agent: agent_01…            # default agent (the CLI's --agent wins)
    repeats: 1
    pricing: {"claude-sonnet-*": {input_per_mtok: 3, output_per_mtok: 15}}
    scorers: [{type: max_turns, value: 4}]        # for every case, before its own
    cases:
      - id: hello
        input: Say hello                          # or turns: [...], or events: [...]
        tool_results: {lookup: "42"}              # custom tool answers, by name
        confirm: allow                            # answer tool confirmations
        outcome: {description: "a greeting", rubric: "Greets the user by name"}
        scorers: [{type: contains, value: hello}]
        repeats: 3
        metadata: {area: greetings}

A case's `outcome` is sent as a `user.define_outcome` with its first turn, and the case's
verdict is written back into the session as an outcome evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from sessiond.evals.scorers import ScorerSpec, decode_scorers
from sessiond.runtime.engine.pricing import Price
from sessiond.store.errors import InvalidInputError


class Outcome(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the agent should produce, graded against `rubric`."""

    description: str
    rubric: str


class Case(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One case of a suite."""

    id: str
    input: str | None = None
    turns: list[str] | None = None
    events: list[dict[str, Any]] | None = None
    """Raw user events for a single turn (user.message, user.define_outcome, …)."""
    tool_results: dict[str, str] = {}
    confirm: Literal["allow", "deny"] | None = None
    outcome: Outcome | None = None
    scorers: list[ScorerSpec] = []
    repeats: int | None = None
    metadata: dict[str, str] = {}

    def turn_count(self) -> int:
        """How many turns the case sends."""
        return len(self.turns) if self.turns is not None else 1

    def turn_events(self, index: int) -> list[dict[str, Any]]:
        """The raw user events of turn `index`."""
        if self.events is not None:
            events = [dict(e) for e in self.events]
        else:
            text = self.turns[index] if self.turns is not None else self.input
            events = [{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        if index == 0 and self.outcome is not None:
            events.append(
                {
                    "type": "user.define_outcome",
                    "description": self.outcome.description,
                    "rubric": {"type": "text", "content": self.outcome.rubric},
                }
            )
        return events


class Suite(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A named list of cases and the scorers they share."""

    cases: list[Case]
    name: str | None = None
    description: str | None = None
    agent: str | None = None
    repeats: int = 1
    pricing: dict[str, Price] = {}
    scorers: list[ScorerSpec] = []


def parse_suite(
    data: bytes | str | dict[str, Any],
    *,
    fmt: str = "json",
    python_modules: frozenset[str] | None = None,
) -> Suite:
    """A suite from JSON or YAML text, or from an already-parsed object (`python_modules`:
    see `decode_scorers`)."""
    if isinstance(data, bytes | str):
        try:
            loaded = yaml.safe_load(data) if fmt == "yaml" else msgspec.json.decode(data)
        except (yaml.YAMLError, msgspec.DecodeError) as exc:
            raise InvalidInputError(f"suite: not valid {fmt.upper()}: {exc}") from exc
    else:
        loaded = data
    if not isinstance(loaded, dict):
        raise InvalidInputError("suite: expected an object with `cases`")
    raw_cases = loaded.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise InvalidInputError("suite: `cases` must be a non-empty list")
    decode_scorers(loaded.get("scorers") or [], "suite.scorers", python_modules=python_modules)
    for index, raw in enumerate(raw_cases):
        label = raw.get("id") if isinstance(raw, dict) else None
        where = f"cases[{index}]" + (f" ({label})" if label else "")
        if isinstance(raw, dict):
            decode_scorers(
                raw.get("scorers") or [], f"{where}.scorers", python_modules=python_modules
            )
    try:
        suite = msgspec.convert(loaded, Suite)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"suite: {exc}", code="invalid_suite") from exc
    seen: set[str] = set()
    for index, case in enumerate(suite.cases):
        where = f"cases[{index}] ({case.id})"
        if not case.id.strip():
            raise InvalidInputError(f"cases[{index}]: id must not be empty")
        if case.id in seen:
            raise InvalidInputError(f"{where}: duplicate case id")
        seen.add(case.id)
        given = [case.input is not None, case.turns is not None, case.events is not None]
        if sum(given) != 1:
            raise InvalidInputError(f"{where}: give exactly one of input, turns and events")
        if case.turns is not None and not case.turns:
            raise InvalidInputError(f"{where}: turns must not be empty")
        if case.repeats is not None and not 1 <= case.repeats <= 100:
            raise InvalidInputError(f"{where}: repeats must be between 1 and 100")
    if not 1 <= suite.repeats <= 100:
        raise InvalidInputError("suite: repeats must be between 1 and 100")
    return suite


def load_suite(path: str | Path) -> Suite:
    """A suite file; `.yaml`/`.yml` are YAML, anything else JSON."""
    path = Path(path)
    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"suite: cannot read {path}: {exc}") from exc
    return parse_suite(data, fmt=fmt)
