"""What an eval run produces: one `CaseResult` per (agent version, case, repeat).

These are the shared shapes between the runner (which writes them), the API (which returns
them), and reports (which read them). A result always links to the real session it ran in,
so a failing case can be opened, replayed and forked.
"""

from __future__ import annotations

from typing import Literal

import msgspec

CaseStatus = Literal["passed", "failed", "error", "cancelled", "cassette_miss"]
"""`error`: the session could not be run to the end (the model failed, a timeout, …);
`cassette_miss`: a cassette re-run asked the model something the recording never did."""


class ScoreResult(msgspec.Struct, frozen=True, kw_only=True):
    """One scorer's verdict on one case run."""

    scorer: str
    """The scorer's name (its `name` in the suite, or its type)."""
    passed: bool
    score: float
    """In [0, 1]; 1.0 or 0.0 for pass/fail scorers, the grade for graded ones."""
    detail: str = ""
    """Why, in a sentence a person can act on."""


class CaseResult(msgspec.Struct, frozen=True, kw_only=True):
    """One case run: its session, its scores and what it cost."""

    run_id: str
    case_id: str
    agent_id: str
    agent_version: int
    repeat: int
    """0-based repeat (epoch) index."""
    session_id: str | None
    status: CaseStatus
    scores: list[ScoreResult] = []
    score: float = 0.0
    """Mean of `scores[].score` (0.0 when there are none or the case did not finish)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    """List cost, when the model's price is known (see `runtime/engine/pricing.py`)."""
    latency_s: float = 0.0
    """Wall time from the first input to the session's final idle."""
    turns: int = 0
    """Model requests made."""
    error: str | None = None
    source_session_id: str | None = None
    """For re-runs: the recorded session this case came from."""

    @property
    def passed(self) -> bool:
        """Whether the case counts as passed."""
        return self.status == "passed"
