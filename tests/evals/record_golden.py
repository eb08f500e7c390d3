"""Record the golden logs in tests/evals/golden/ (run by hand; the tests only read them).

    python tests/evals/record_golden.py

Each scenario runs against a real sessiond whose model is the deterministic fake of
tests/eval_harness.py; the session is exported (`GET /v1/sessions/{id}/export`) and saved
with the scorers to apply and the scores they gave, which replay must reproduce exactly.
Re-record only when the event format changes on purpose, and review the diff.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_harness import collect_until_idle  # noqa: E402
from eval_harness import eval_server, http, sdk, toolset_agent  # noqa: E402
from harness import user_message  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
ASK = [
    {
        "type": "agent_toolset_20260401",
        "default_config": {"permission_policy": {"type": "always_ask"}},
    }
]

SCENARIOS: dict[str, dict[str, Any]] = {
    "echo": {
        "turns": ["hello there"],
        "scorers": [
            {"type": "exact", "value": "echo: hello there"},
            {"type": "max_turns", "value": 1},
        ],
    },
    "tool_call": {
        "turns": ["calc 2+3"],
        "scorers": [
            {"type": "contains", "value": "5"},
            {"type": "tool_called", "tool": "bash", "input": {"command": "re:2\\+3"}},
            {"type": "max_turns", "value": 1},
        ],
    },
    "custom_tool": {
        "turns": ["ask lookup"],
        "answer": "forty-two",
        "scorers": [{"type": "regex", "pattern": "forty-?two"}],
    },
    "multi_turn": {
        "turns": ["hello", "calc 6*7", "bye"],
        "scorers": [
            {"type": "exact", "value": "echo: bye"},
            {"type": "max_tokens", "value": 10},
        ],
    },
    "confirmed": {
        "turns": ["calc 3*3"],
        "confirm": "allow",
        "agent": {"tools": ASK},
        "scorers": [{"type": "contains", "value": "9"}],
    },
}


def record(name: str, scenario: dict[str, Any], server: Any) -> dict[str, Any]:
    import anyio
    import msgspec

    from sessiond.evals.replay import replay_exported
    from sessiond.evals.scorers import decode_scorers
    from sessiond.runtime.resources.transfer import SessionExport

    with sdk(server) as client, http(server) as h:
        agent = toolset_agent(client, **scenario.get("agent", {}))
        env = client.beta.environments.create(name="golden")
        session = client.beta.sessions.create(
            agent=agent.id, environment_id=env.id, title=f"golden {name}"
        )
        for text in scenario["turns"]:
            frames = collect_until_idle(client, session.id, [user_message(text)])
            while frames[-1].stop_reason.type == "requires_action":
                answers = []
                for event_id in frames[-1].stop_reason.event_ids:
                    if "confirm" in scenario:
                        answers.append(
                            {
                                "type": "user.tool_confirmation",
                                "tool_use_id": event_id,
                                "result": scenario["confirm"],
                            }
                        )
                    else:
                        answers.append(
                            {
                                "type": "user.custom_tool_result",
                                "custom_tool_use_id": event_id,
                                "content": [{"type": "text", "text": scenario["answer"]}],
                            }
                        )
                frames = collect_until_idle(client, session.id, answers)
        exported = h.get(f"/v1/sessions/{session.id}/export").json()
    scorers = scenario["scorers"]
    as_export = msgspec.json.decode(msgspec.json.encode(exported), type=SessionExport)
    result = anyio.run(replay_exported, as_export, decode_scorers(scorers))
    assert result.projection_matches, result.mismatches
    exported["scorers"] = scorers
    exported["expected_scores"] = [
        {"scorer": s.scorer, "passed": s.passed, "score": s.score, "detail": s.detail}
        for s in result.scores
    ]
    return exported


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    with eval_server(Path(tempfile.mkdtemp())) as (server, _script):
        for name, scenario in SCENARIOS.items():
            data = record(name, scenario, server)
            path = GOLDEN / f"{name}.json"
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"wrote {path} ({len(data['events'])} events)")


if __name__ == "__main__":
    main()
