"""The report as one self-contained HTML page: inline CSS, no scripts, no external assets."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from sessiond.evals.diff import SessionDiff
from sessiond.evals.report import Report

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d1d1f;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.3em .6em;border:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f5f5f7}.num{text-align:right}
.pass{background:#e3f6e8}.fail{background:#fde7e7}.error{background:#fff4d6}
.cancelled{background:#eee}.bar{display:inline-block;height:.7em;background:#34a853}
.barbg{display:inline-block;width:80px;height:.7em;background:#eee;margin-right:.4em}
.insert{background:#e3f6e8}.delete{background:#fde7e7}.replace{background:#fff4d6}
code{font-size:.9em}.muted{color:#777}
"""


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _cell_class(status: str) -> str:
    return {"passed": "pass", "failed": "fail", "cancelled": "cancelled"}.get(status, "error")


def render_html(report: Report, diffs: Mapping[str, SessionDiff] | None = None) -> str:
    """The page (every piece of text from the data is HTML-escaped)."""
    out: list[str] = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(report.title or 'eval report')}</title><style>{_CSS}</style></head><body>",
        f"<h1>Eval report {escape(report.title)}</h1>",
        f"<p class='muted'>runs {escape(', '.join(report.run_ids))} · "
        f"{escape(report.created_at)}</p>",
        "<h2>Versions</h2><table><tr><th>agent version</th><th>pass rate (95% CI)</th>"
        "<th>mean score (95% CI)</th><th>runs</th><th>errors</th><th>tokens / run</th>"
        "<th>cost</th><th>latency p50 / p90 / p99</th><th>turns / run</th></tr>",
    ]
    for v in report.versions:
        low, high = v.pass_rate_ci
        cost = "—" if v.cost_usd is None else f"${v.cost_usd:.4f}"
        if v.cost_usd is not None and not v.cost_complete:
            cost += " (partial)"
        out.append(
            f"<tr><td><code>{escape(v.agent_id)}</code> v{v.agent_version}</td>"
            f"<td><span class='barbg'><span class='bar' style='width:{v.pass_rate * 80:.0f}px'>"
            f"</span></span>{_pct(v.pass_rate)} ({_pct(low)}–{_pct(high)})</td>"
            f"<td class='num'>{v.mean_score:.3f} ({v.mean_score_ci[0]:.3f}–"
            f"{v.mean_score_ci[1]:.3f})</td><td class='num'>{v.runs}</td>"
            f"<td class='num'>{v.errors + v.cassette_misses}</td>"
            f"<td class='num'>{v.mean_tokens:.0f}</td><td class='num'>{escape(cost)}</td>"
            f"<td class='num'>{v.latency_p50_s:.2f}s / {v.latency_p90_s:.2f}s / "
            f"{v.latency_p99_s:.2f}s</td><td class='num'>{v.mean_turns:.1f}</td></tr>"
        )
    out.append("</table>")
    for c in report.comparisons:
        out.append(
            f"<h2>v{c.b[1]} against v{c.a[1]}</h2><p><b>{escape(c.verdict)}</b></p>"
            f"<p>mean score change {c.mean_score_delta:+.3f} (95% CI "
            f"{c.mean_score_delta_ci[0]:+.3f} to {c.mean_score_delta_ci[1]:+.3f})</p>"
            f"<p>fixed: {escape(', '.join(c.fixed) or 'none')}<br>"
            f"broke: {escape(', '.join(c.broke) or 'none')}</p>"
        )
    labels = [f"{v.agent_id}:{v.agent_version}" for v in report.versions]
    out.append("<h2>Cases</h2><table><tr><th>case</th>")
    out.extend(f"<th>v{escape(label.rpartition(':')[2])}</th>" for label in labels)
    out.append("</tr>")
    for row in report.cases:
        out.append(f"<tr><td>{escape(row.case_id)}</td>")
        for label in labels:
            results = row.results.get(label, [])
            cells = []
            for r in results:
                title = escape(r.error or "; ".join(f"{s.scorer}: {s.detail}" for s in r.scores))
                session = escape(r.session_id or "")
                cells.append(
                    f"<div class='{_cell_class(r.status)}' title='{title}'>{escape(r.status)} "
                    f"{r.score:.2f} <code class='muted'>{session}</code></div>"
                )
            out.append(f"<td>{''.join(cells) or '—'}</td>")
        out.append("</tr>")
    out.append("</table>")
    for case_id, diff in (diffs or {}).items():
        out.append(
            f"<h2>Event diff: {escape(case_id)}</h2><p class='muted'>{diff.equal} equal, "
            f"{diff.inserted} inserted, {diff.deleted} deleted, {diff.replaced} changed</p>"
            "<table><tr><th>#</th><th>before</th><th>#</th><th>after</th></tr>"
        )
        for d in diff.rows:
            changes = "".join(
                f"<br><code>{escape(k)}: {escape(repr(a))[:200]} → {escape(repr(b))[:200]}</code>"
                for k, (a, b) in d.changes.items()
            )
            out.append(
                f"<tr class='{d.op}'><td>{'' if d.left_index is None else d.left_index}</td>"
                f"<td>{escape(d.left or '')}</td>"
                f"<td>{'' if d.right_index is None else d.right_index}</td>"
                f"<td>{escape(d.right or '')}{changes}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
