"""`sessiond eval …` against a live server: progress, reports, and the CI gate's exit status."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest
from eval_harness import toolset_agent
from harness import ADMIN_KEY, RunningServer

from sessiond.api.cli import main

SUITE = """
name: cli
cases:
  - id: greet
    input: hello
    scorers: [{type: regex, pattern: "^echo: hello$"}]
  - id: sum
    input: calc 2+3
    scorers: [{type: contains, value: "5"}, {type: tool_called, tool: bash}]
"""


def test_eval_run_reports_and_gates(
    server: RunningServer,
    client: anthropic.Anthropic,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent = toolset_agent(client, name="cli")
    v2 = client.beta.agents.update(agent.id, version=agent.version, system="SHOUT")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    base = ["eval", "--url", server.base_url, "--api-key", ADMIN_KEY]
    run = [*base, "run", str(suite), "--agent", agent.id, "--versions", f"1,{v2.version}"]
    out_json, out_html = tmp_path / "report.json", tmp_path / "report.html"
    strict = main(
        [*run, "--min-pass-rate", "0.9", "--json-out", str(out_json), "--html-out", str(out_html)]
    )
    assert strict == 1, "v2 fails `greet`, so a 90% gate must fail"
    report = json.loads(out_json.read_text())
    assert [v["pass_rate"] for v in report["versions"]] == [1.0, 0.5]
    assert report["comparisons"][0]["broke"] == ["greet"]
    assert "greet" in out_html.read_text()
    printed = capsys.readouterr().out
    assert "broke: greet" in printed
    assert main([*run, "--min-pass-rate", "0.5"]) == 0
    run_id = report["run_ids"][0]
    assert main([*base, "report", run_id, "--min-pass-rate", "0.75"]) == 1
    assert main([*base, "report", run_id]) == 0


def test_eval_replay_of_a_golden_file_and_bad_suites(tmp_path: Path, server: RunningServer) -> None:
    golden = Path(__file__).parent / "golden" / "echo.json"
    base = ["eval", "--url", server.base_url, "--api-key", ADMIN_KEY]
    assert main([*base, "replay", str(golden)]) == 0
    data = json.loads(golden.read_text())
    data["events"][-2]["model_usage"]["output_tokens"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    assert main([*base, "replay", str(tampered)]) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("cases: [{id: a}]")
    with pytest.raises(Exception, match="exactly one of input"):
        main([*base, "run", str(bad), "--agent", "agent_x"])
