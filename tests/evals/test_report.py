"""Reports and statistics on hand-made results whose flips are known."""

from __future__ import annotations

import msgspec
import pytest

from sessiond.evals.diff import diff_sessions
from sessiond.evals.html import render_html
from sessiond.evals.report import Report, build_report, report_json
from sessiond.evals.results import CaseResult
from sessiond.evals.stats import mcnemar_exact, percentile, wilson_interval


def test_known_statistics() -> None:
    assert mcnemar_exact(10, 2) == pytest.approx(0.03857, abs=1e-5)
    assert mcnemar_exact(3, 3) == 1.0
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([1, 2, 3, 4], 90) == pytest.approx(
        3.7
    )


def _result(case: str, version: int, repeat: int, passed: bool) -> CaseResult:
    return CaseResult(
        run_id="evrun_x",
        case_id=case,
        agent_id="agent_a",
        agent_version=version,
        repeat=repeat,
        session_id=f"sesn_{case}_{version}_{repeat}",
        status="passed" if passed else "failed",
        score=1.0 if passed else 0.0,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.001,
        latency_s=0.1 * (repeat + 1),
        turns=1,
    )


# Per case: passes of v1 and of v2 over three repeats.
PLAN = {"stays": (3, 3), "fixed": (1, 3), "broke": (2, 1), "fails": (0, 1), "tie": (1, 2)}


def test_report_finds_exactly_the_flips_and_escapes_html() -> None:
    results = [
        _result(case, version, repeat, repeat < passes[version - 1])
        for case, passes in PLAN.items()
        for version in (1, 2)
        for repeat in range(3)
    ]
    results.append(_result("<script>alert(1)</script>", 1, 0, True))
    report = build_report(results, title="t")
    [comparison] = report.comparisons
    assert comparison.fixed == ["fixed", "tie"]
    assert comparison.broke == ["broke"]
    flips = {c.case_id: c.flip for c in comparison.cases}
    assert flips == {
        "stays": "same_pass",
        "fixed": "fixed",
        "broke": "broke",
        "fails": "same_fail",
        "tie": "fixed",
    }
    assert comparison.mcnemar_p == pytest.approx(mcnemar_exact(1, 2))
    v1, v2 = report.versions
    assert (v1.runs, v1.passed) == (16, 8) and (v2.runs, v2.passed) == (15, 10)
    assert v1.pass_rate_ci[0] < v1.pass_rate < v1.pass_rate_ci[1]
    assert v1.latency_p50_s == pytest.approx(0.2) and v1.cost_usd == pytest.approx(0.016)
    decoded = msgspec.json.decode(report_json(report), type=Report)
    assert decoded.comparisons[0].fixed == comparison.fixed
    page = render_html(report)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page
    for case in PLAN:
        assert case in page


def _log(*events: tuple[str, dict[str, object]]) -> list[dict[str, object]]:
    return [
        {"id": f"sevt_{i}_{id(events)}", "processed_at": f"t{i}", "type": kind, **body}
        for i, (kind, body) in enumerate(events)
    ]


def test_session_diff_aligns_events_and_ignores_ids() -> None:
    base = [
        ("user.message", {"content": [{"type": "text", "text": "hi"}]}),
        ("agent.message", {"content": [{"type": "text", "text": "hello"}]}),
        ("session.status_idle", {"stop_reason": {"type": "end_turn"}}),
    ]
    same = diff_sessions(_log(*base), _log(*base))
    assert same.first_divergence is None and same.equal == 3
    inserted = diff_sessions(
        _log(*base), _log(base[0], ("agent.tool_use", {"name": "bash", "input": {}}), *base[1:])
    )
    assert (inserted.inserted, inserted.equal, inserted.first_divergence) == (1, 3, 1)
    assert [r.op for r in inserted.rows] == ["equal", "insert", "equal", "equal"]
    changed = diff_sessions(
        _log(*base),
        _log(base[0], ("agent.message", {"content": [{"type": "text", "text": "HI"}]}), base[2]),
    )
    [row] = [r for r in changed.rows if r.op == "replace"]
    assert row.left_index == 1 and "content" in row.changes
