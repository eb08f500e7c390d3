"""`python -m bench [--quick] [--only a,b] [--peers] [--update-readme]`."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from bench.common import ROOT, Results
from bench.readme import update_readme

ALL = ["append", "resume", "sse", "engine", "sandbox", "memory", "evals", "scaleout"]
MODULES = {
    "append": "bench.append",
    "resume": "bench.resume",
    "sse": "bench.sse_fanout",
    "engine": "bench.engine_turn",
    "sandbox": "bench.sandbox_tool",
    "memory": "bench.memory",
    "evals": "bench.evals_throughput",
    "peers": "bench.peers",
    "scaleout": "bench.scale_out",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)},peers")
    parser.add_argument("--peers", action="store_true", help="also run the peer comparisons")
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--update-readme", action="store_true", help="rewrite the results table in README.md"
    )
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else [*ALL, *(["peers"] if args.peers else [])]
    results = Results()
    results.meta["quick"] = args.quick
    for name in chosen:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(MODULES[name])
        try:
            module.run(results, quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"  {name} failed: {type(exc).__name__}: {exc}", flush=True)
            results.meta.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
        results.write(args.json_out)
    print(f"wrote {args.json_out}")
    if args.update_readme:
        update_readme(results)
        print("updated README.md")


if __name__ == "__main__":
    main()
