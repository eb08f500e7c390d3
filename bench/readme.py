"""Regenerate the README's results table from a run."""

from __future__ import annotations

from bench.common import ROOT, Results

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def table(results: Results) -> str:
    meta = results.meta
    lines = [
        f"Measured {meta['date']} on {meta['cores']} cores, Python {meta['python']}, with "
        f"`{meta['command']}`{' (quick sizes)' if meta.get('quick') else ''}.",
        "",
        "| benchmark | figure | value | baseline | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for f in results.figures:
        base = f"{f.baseline:,.1f} ({f.baseline_name})" if f.baseline is not None else ""
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        target = ""
        if f.target:
            target = f"{f.target} {'✅' if f.met else '❌' if f.met is False else ''}"
        lines.append(
            f"| {f.bench} | {f.name} | {f.value:,.2f} {f.unit} | {base} | {ratio} | {target} |"
        )
    return "\n".join(lines)


def update_readme(results: Results) -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    block = f"{START}\n{table(results)}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text += f"\n## Benchmarks\n\n`python -m bench` (see `bench/README.md`).\n\n{block}\n"
    path.write_text(text)
