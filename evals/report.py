"""Reports: per agent version summaries, and paired comparisons between versions.

A case *passes* for a version when a strict majority of its repeats passed (a tie fails).
Between versions A and B a case is `fixed` (A fails, B passes), `broke` (A passes, B
fails), `same_pass` or `same_fail`. Significance: exact McNemar on the per-case pass/fail
pairs, and a paired bootstrap on the per-case mean-score differences.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import msgspec

from sessiond.evals.results import CaseResult
from sessiond.evals.stats import (
    bootstrap_mean_ci,
    mcnemar_exact,
    paired_bootstrap,
    percentile,
    wilson_interval,
)
from sessiond.store.clock import now_ts

Flip = Literal["fixed", "broke", "same_pass", "same_fail"]
ALPHA = 0.05


class VersionSummary(msgspec.Struct, kw_only=True):
    """How one agent version did over every case and repeat."""

    agent_id: str
    agent_version: int
    cases: int
    runs: int
    passed: int
    errors: int
    cassette_misses: int
    cancelled: int
    pass_rate: float
    pass_rate_ci: tuple[float, float]
    mean_score: float
    mean_score_ci: tuple[float, float]
    input_tokens: int
    output_tokens: int
    mean_tokens: float
    cost_usd: float | None
    cost_complete: bool
    """False when some runs had no known price (the cost is then a lower bound)."""
    latency_p50_s: float
    latency_p90_s: float
    latency_p99_s: float
    mean_turns: float


class CaseComparison(msgspec.Struct, kw_only=True):
    """One case under versions A and B."""

    case_id: str
    pass_rate_a: float
    pass_rate_b: float
    mean_score_a: float
    mean_score_b: float
    delta_score: float
    flip: Flip
    sessions_a: list[str]
    sessions_b: list[str]


class Comparison(msgspec.Struct, kw_only=True):
    """Version B against version A, case by case."""

    a: tuple[str, int]
    b: tuple[str, int]
    cases: list[CaseComparison]
    fixed: list[str]
    broke: list[str]
    mcnemar_p: float
    mean_score_delta: float
    mean_score_delta_ci: tuple[float, float]
    bootstrap_p: float
    verdict: str


class CaseRow(msgspec.Struct, kw_only=True):
    """One case across every version (the side-by-side matrix)."""

    case_id: str
    results: dict[str, list[CaseResult]]
    """Keyed `agent_id:version`."""


class Report(msgspec.Struct, kw_only=True):
    """Everything a report page or a CI gate needs."""

    title: str
    created_at: str
    run_ids: list[str]
    versions: list[VersionSummary]
    comparisons: list[Comparison]
    cases: list[CaseRow]
    type: str = "eval_report"


def _key(result: CaseResult) -> tuple[str, int]:
    return (result.agent_id, result.agent_version)


def _label(key: tuple[str, int]) -> str:
    return f"{key[0]}:{key[1]}"


def _majority(results: Sequence[CaseResult]) -> bool:
    return sum(r.passed for r in results) * 2 > len(results)


def _summary(key: tuple[str, int], results: Sequence[CaseResult]) -> VersionSummary:
    scored = [r for r in results if r.status != "cancelled"]
    passed = sum(r.passed for r in scored)
    costs = [r.cost_usd for r in scored]
    latencies = [r.latency_s for r in scored if r.status in ("passed", "failed")]
    tokens = [r.input_tokens + r.output_tokens for r in scored]
    scores = [r.score for r in scored]
    n = len(scored)
    return VersionSummary(
        agent_id=key[0],
        agent_version=key[1],
        cases=len({r.case_id for r in results}),
        runs=n,
        passed=passed,
        errors=sum(r.status == "error" for r in scored),
        cassette_misses=sum(r.status == "cassette_miss" for r in scored),
        cancelled=len(results) - n,
        pass_rate=passed / n if n else 0.0,
        pass_rate_ci=wilson_interval(passed, n),
        mean_score=sum(scores) / n if n else 0.0,
        mean_score_ci=bootstrap_mean_ci(scores),
        input_tokens=sum(r.input_tokens for r in scored),
        output_tokens=sum(r.output_tokens for r in scored),
        mean_tokens=sum(tokens) / n if n else 0.0,
        cost_usd=round(sum(c for c in costs if c is not None), 8) if costs else None,
        cost_complete=all(c is not None for c in costs),
        latency_p50_s=percentile(latencies, 50),
        latency_p90_s=percentile(latencies, 90),
        latency_p99_s=percentile(latencies, 99),
        mean_turns=sum(r.turns for r in scored) / n if n else 0.0,
    )


def _flip(a: bool, b: bool) -> Flip:
    if a == b:
        return "same_pass" if a else "same_fail"
    return "fixed" if b else "broke"


def compare(
    a: tuple[str, int],
    b: tuple[str, int],
    by_case: dict[str, dict[tuple[str, int], list[CaseResult]]],
) -> Comparison:
    """B against A over the cases both ran (cancelled runs left out)."""
    rows: list[CaseComparison] = []
    for case_id, per_version in by_case.items():
        left = [r for r in per_version.get(a, []) if r.status != "cancelled"]
        right = [r for r in per_version.get(b, []) if r.status != "cancelled"]
        if not left or not right:
            continue
        score_a = sum(r.score for r in left) / len(left)
        score_b = sum(r.score for r in right) / len(right)
        rows.append(
            CaseComparison(
                case_id=case_id,
                pass_rate_a=sum(r.passed for r in left) / len(left),
                pass_rate_b=sum(r.passed for r in right) / len(right),
                mean_score_a=score_a,
                mean_score_b=score_b,
                delta_score=score_b - score_a,
                flip=_flip(_majority(left), _majority(right)),
                sessions_a=[r.session_id for r in left if r.session_id],
                sessions_b=[r.session_id for r in right if r.session_id],
            )
        )
    fixed = [r.case_id for r in rows if r.flip == "fixed"]
    broke = [r.case_id for r in rows if r.flip == "broke"]
    p = mcnemar_exact(len(broke), len(fixed))
    mean, low, high, boot_p = paired_bootstrap([r.delta_score for r in rows])
    if p < ALPHA or boot_p < ALPHA:
        better = len(fixed) > len(broke) if len(fixed) != len(broke) else mean > 0
        verdict = f"{_label(b)} is {'better' if better else 'worse'} than {_label(a)}"
        verdict += f" (McNemar p={p:.3g}, bootstrap p={boot_p:.3g})"
    else:
        verdict = (
            f"no significant difference between {_label(a)} and {_label(b)} at α={ALPHA} "
            f"(McNemar p={p:.3g}, bootstrap p={boot_p:.3g}; {len(rows)} paired cases)"
        )
    return Comparison(
        a=a,
        b=b,
        cases=rows,
        fixed=fixed,
        broke=broke,
        mcnemar_p=p,
        mean_score_delta=mean,
        mean_score_delta_ci=(low, high),
        bootstrap_p=boot_p,
        verdict=verdict,
    )


def build_report(
    results: Sequence[CaseResult],
    *,
    baseline: tuple[str, int] | None = None,
    title: str = "",
) -> Report:
    """Summaries per version, and comparisons: `baseline` against every other version, or
    each version against the one before it (ascending versions, agents in order of first
    appearance)."""
    versions: dict[tuple[str, int], list[CaseResult]] = defaultdict(list)
    by_case: dict[str, dict[tuple[str, int], list[CaseResult]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for result in results:
        versions[_key(result)].append(result)
        by_case[result.case_id][_key(result)].append(result)
    agents = list(dict.fromkeys(k[0] for k in versions))
    order = sorted(versions, key=lambda k: (agents.index(k[0]), k[1]))
    if baseline is not None and baseline in versions:
        pairs = [(baseline, v) for v in order if v != baseline]
    else:
        pairs = list(zip(order, order[1:], strict=False))
    return Report(
        title=title,
        created_at=now_ts(),
        run_ids=sorted({r.run_id for r in results}),
        versions=[_summary(k, versions[k]) for k in order],
        comparisons=[compare(a, b, by_case) for a, b in pairs],
        cases=[
            CaseRow(
                case_id=case_id,
                results={
                    _label(k): sorted(v, key=lambda r: r.repeat) for k, v in per_version.items()
                },
            )
            for case_id, per_version in by_case.items()
        ],
    )


def report_json(report: Report) -> bytes:
    """The report as JSON."""
    return msgspec.json.encode(report)
