"""`sessiond eval …`: run suites, re-run recordings, replay and report, against a server.

The CLI is a client of the HTTP API (`SESSIOND_URL`, `SESSIOND_API_KEY`), so it works the
same against a laptop server and a shared one, and a CI job can gate on it: the exit
status is 1 when `--min-pass-rate` is not met by every version, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sessiond.evals.suite import load_suite
from sessiond.runtime.resources.transfer import SessionExport

console = Console(stderr=True)


class _Recording(SessionExport, kw_only=True):
    """A file `eval replay` reads: an exported session, and (golden files) its scorers."""

    scorers: list[Any] = []


_decode_recording = msgspec.json.Decoder(_Recording).decode


def add_parser(sub: Any) -> None:
    """Register `eval` and its subcommands on the top-level subparsers."""
    evals = sub.add_parser("eval", help="run, re-run, replay and report evals")
    evals.add_argument("--url", default=os.environ.get("SESSIOND_URL", "http://127.0.0.1:8420"))
    evals.add_argument("--api-key", default=os.environ.get("SESSIOND_API_KEY"))
    cmds = evals.add_subparsers(dest="eval_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--agent", help="agent id (defaults to the suite's `agent`)")
        p.add_argument("--versions", help="comma-separated agent versions, e.g. 3,4")
        p.add_argument("--repeat", type=int, help="repeats per case (overrides the suite)")
        p.add_argument("--concurrency", type=int, default=4)
        p.add_argument("--min-pass-rate", type=float, help="fail (exit 1) below this, 0..1")
        p.add_argument("--json-out", type=Path, help="write the report JSON here")
        p.add_argument("--html-out", type=Path, help="write the report HTML here")
        p.add_argument("--no-wait", action="store_true", help="start the run and print its id")

    run = cmds.add_parser("run", help="run a suite file (YAML or JSON)")
    run.add_argument("suite", type=Path)
    common(run)
    rerun = cmds.add_parser("rerun", help="re-run recorded sessions")
    rerun.add_argument("--sessions", help="comma-separated session ids")
    rerun.add_argument("--from-agent", help="select recordings of this agent")
    rerun.add_argument("--from-version", type=int, help="… pinned to this version")
    rerun.add_argument("--scorers", type=Path, help="JSON/YAML file with a list of scorers")
    rerun.add_argument("--cassette", action="store_true", help="serve recorded model responses")
    common(rerun)
    replay = cmds.add_parser("replay", help="replay a session (id or exported JSON file)")
    replay.add_argument("session", help="a session id or the path of an exported session")
    replay.add_argument("--scorers", type=Path, help="JSON/YAML file with a list of scorers")
    report = cmds.add_parser("report", help="report one run, or compare runs")
    report.add_argument("run_id")
    report.add_argument("--with", dest="with_runs", help="more run ids to compare against")
    report.add_argument("--baseline", help="AGENT_ID:VERSION to compare every version against")
    report.add_argument("--min-pass-rate", type=float)
    report.add_argument("--json-out", type=Path)
    report.add_argument("--html-out", type=Path)


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"x-api-key": args.api_key} if args.api_key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=60)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        console.print(f"[red]error {response.status_code}:[/red] {message}")
        raise SystemExit(2)
    return response.json()


def _scorers_file(path: Path | None) -> list[Any]:
    if path is None:
        return []
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a list of scorers")
    return data


def _versions(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--versions: expected numbers like 3,4, got {text!r}") from None


def _follow(client: httpx.Client, run: dict[str, Any]) -> None:
    """Show progress from the run's event stream, resuming after a dropped connection."""
    last_id: str | None = None
    total = run["counts"]["total"]
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[passed]} passed[/green] [red]{task.fields[bad]} not"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(run["id"], total=total, passed=0, bad=0)
        passed = bad = 0
        for _ in range(100):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with client.stream(
                    "GET", f"/v1/evals/{run['id']}/events/stream", headers=headers, timeout=None
                ) as stream:
                    frame: dict[str, str] = {}
                    for line in stream.iter_lines():
                        if line:
                            key, _, value = line.partition(":")
                            frame[key] = value.lstrip(" ")
                            continue
                        if "id" in frame:
                            last_id = frame["id"]
                        data = json.loads(frame["data"]) if "data" in frame else {}
                        frame = {}
                        if data.get("type") == "eval.case_finished":
                            ok = data["result"]["status"] == "passed"
                            passed, bad = passed + ok, bad + (not ok)
                            progress.update(task, advance=1, passed=passed, bad=bad)
                        elif data.get("type") == "eval.run_finished":
                            return
            except httpx.TransportError:
                continue


def _report(client: httpx.Client, args: argparse.Namespace, run_ids: list[str]) -> int:
    params: dict[str, str] = {}
    if len(run_ids) > 1:
        params["with"] = ",".join(run_ids[1:])
    if getattr(args, "baseline", None):
        params["baseline"] = args.baseline
    report = _check(client.get(f"/v1/evals/{run_ids[0]}/report", params=params))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    if args.html_out:
        page = client.get(f"/v1/evals/{run_ids[0]}/report", params={**params, "format": "html"})
        args.html_out.write_text(page.text)
    table = Table(title=f"eval {', '.join(run_ids)}")
    for column in ("version", "pass rate (95% CI)", "score", "runs", "errors", "p50 / p99 s"):
        table.add_column(column)
    for v in report["versions"]:
        low, high = v["pass_rate_ci"]
        table.add_row(
            f"{v['agent_id']} v{v['agent_version']}",
            f"{v['pass_rate']:.1%} ({low:.0%}–{high:.0%})",
            f"{v['mean_score']:.3f}",
            str(v["runs"]),
            str(v["errors"] + v["cassette_misses"]),
            f"{v['latency_p50_s']:.2f} / {v['latency_p99_s']:.2f}",
        )
    Console().print(table)
    for c in report["comparisons"]:
        Console().print(c["verdict"])
        if c["fixed"]:
            Console().print(f"  fixed: {', '.join(c['fixed'])}")
        if c["broke"]:
            Console().print(f"  broke: {', '.join(c['broke'])}")
    gate = args.min_pass_rate
    if gate is not None:
        low = [v for v in report["versions"] if v["pass_rate"] < gate]
        for v in low:
            console.print(
                f"[red]gate failed:[/red] {v['agent_id']} v{v['agent_version']} passed "
                f"{v['pass_rate']:.1%} < {gate:.1%}"
            )
        if low:
            return 1
    return 0


def _start(client: httpx.Client, args: argparse.Namespace, body: dict[str, Any]) -> int:
    body.update(
        {
            "versions": _versions(args.versions),
            "concurrency": args.concurrency,
        }
    )
    if args.agent:
        body["agent_id"] = args.agent
    if args.repeat is not None:
        body["repeats"] = args.repeat
    run = _check(client.post("/v1/evals", json=body))
    console.print(f"eval run [bold]{run['id']}[/bold]: {run['counts']['total']} case runs")
    if args.no_wait:
        print(run["id"])
        return 0
    _follow(client, run)
    final = _check(client.get(f"/v1/evals/{run['id']}"))
    if final["status"] != "completed":
        console.print(f"[red]run {final['status']}[/red] {final.get('error') or ''}")
    code = _report(client, args, [run["id"]])
    return code if final["status"] == "completed" else max(code, 1)


def run_eval_command(args: argparse.Namespace) -> int:
    """Dispatch `sessiond eval …`; returns the exit status."""
    with _client(args) as client:
        if args.eval_command == "run":
            import yaml

            load_suite(args.suite)  # checked here first, so errors name the file
            raw = yaml.safe_load(args.suite.read_text())
            return _start(client, args, {"suite": raw, "title": args.suite.name})
        if args.eval_command == "rerun":
            selection: dict[str, Any] = {}
            if args.sessions:
                selection["session_ids"] = [s for s in args.sessions.split(",") if s]
            if args.from_agent:
                selection["agent_id"] = args.from_agent
            if args.from_version is not None:
                selection["agent_version"] = args.from_version
            if not selection:
                raise SystemExit("rerun: give --sessions or --from-agent")
            body = {
                "sessions": selection,
                "cassette": args.cassette,
                "scorers": _scorers_file(args.scorers),
            }
            return _start(client, args, body)
        if args.eval_command == "replay":
            return _replay(client, args)
        if args.eval_command == "report":
            runs = [args.run_id, *[r for r in (args.with_runs or "").split(",") if r]]
            return _report(client, args, runs)
    return 2


def _replay(client: httpx.Client, args: argparse.Namespace) -> int:
    scorers = _scorers_file(args.scorers)
    path = Path(args.session)
    if path.exists():
        import anyio

        from sessiond.evals.replay import replay_exported
        from sessiond.evals.scorers import decode_scorers

        recording = _decode_recording(path.read_bytes())
        result = anyio.run(replay_exported, recording, decode_scorers(scorers or recording.scorers))
        outcome = {
            "session_id": result.session_id,
            "events": result.events,
            "projection_matches": result.projection_matches,
            "mismatches": result.mismatches,
            "scores": [
                {"scorer": s.scorer, "passed": s.passed, "score": s.score, "detail": s.detail}
                for s in result.scores
            ],
            "passed": result.passed,
        }
    else:
        outcome = _check(
            client.post(f"/v1/sessions/{args.session}/replay", json={"scorers": scorers})
        )
    print(json.dumps(outcome, indent=1))
    if not outcome["projection_matches"]:
        console.print("[red]determinism error:[/red] the replayed projection differs")
    return 0 if outcome["passed"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(2)
