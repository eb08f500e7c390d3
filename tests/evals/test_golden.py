"""Golden logs: replay reproduces projection and scores; cassette re-runs reproduce the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import pytest
from eval_harness import http, shape, toolset_agent, wait_run, wire_events
from fakes.scripts import Script
from harness import RunningServer

from sessiond.evals.replay import replay_exported
from sessiond.evals.scorers import decode_scorers
from sessiond.runtime.resources.sessions import ImportSession
from sessiond.runtime.resources.transfer import SessionExport

ASK = [  # the `confirmed` recording's tools (tests/evals/record_golden.py)
    {
        "type": "agent_toolset_20260401",
        "default_config": {"permission_policy": {"type": "always_ask"}},
    }
]
GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))


class Golden(SessionExport, kw_only=True, forbid_unknown_fields=True):
    """A golden file: an exported session, the scorers to replay it with, and their verdicts."""

    scorers: list[Any]
    expected_scores: list[dict[str, Any]]


def _load(path: Path) -> Golden:
    return msgspec.json.decode(path.read_bytes(), type=Golden)


def test_there_are_golden_logs() -> None:
    assert {p.stem for p in GOLDEN} >= {"echo", "tool_call", "custom_tool", "multi_turn"}


@pytest.mark.anyio
@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
async def test_replay_reproduces_projection_and_scores(path: Path) -> None:
    golden = _load(path)
    result = await replay_exported(golden, decode_scorers(golden.scorers))
    assert result.projection_matches, result.mismatches
    assert result.events == len(golden.events)
    got = [
        {"scorer": s.scorer, "passed": s.passed, "score": s.score, "detail": s.detail}
        for s in result.scores
    ]
    assert got == golden.expected_scores


def test_a_golden_file_reencodes_to_what_the_export_route_writes() -> None:
    """The Struct keeps the session object and the events as their bytes: decoding a
    golden file and encoding it again changes nothing but whitespace and key order."""
    for path in GOLDEN:
        golden = _load(path)
        again = json.loads(msgspec.json.encode(golden))
        assert again == json.loads(path.read_text())
        exported = msgspec.json.decode(msgspec.json.encode(golden), type=SessionExport)
        assert [bytes(e) for e in exported.events] == [bytes(e) for e in golden.events]


@pytest.mark.anyio
async def test_replay_reports_a_tampered_log_as_a_determinism_error() -> None:
    golden = _load(next(p for p in GOLDEN if p.stem == "tool_call"))
    events = [msgspec.json.decode(e) for e in golden.events]
    end = next(e for e in events if e["type"] == "span.model_request_end")
    end["model_usage"]["output_tokens"] += 1000
    tampered = msgspec.structs.replace(
        golden, events=[msgspec.Raw(msgspec.json.encode(e)) for e in events]
    )
    result = await replay_exported(tampered)
    assert not result.projection_matches and not result.passed
    assert any(m.startswith("usage.output_tokens: recorded") for m in result.mismatches)


def test_cassette_rerun_reproduces_each_golden_log(
    server: RunningServer,
    client: anthropic.Anthropic,
    served: tuple[RunningServer, Script],
) -> None:
    script = served[1]
    env = client.beta.environments.create(name="golden-import")
    # An import pins an agent of the importer's workspace: one configured as the recording's.
    agents = {"plain": toolset_agent(client), "ask": toolset_agent(client, tools=ASK)}
    imported: dict[str, str] = {}
    with http(server) as h:
        for path in GOLDEN:
            golden = _load(path)
            agent = agents["ask" if path.stem == "confirmed" else "plain"]
            # The export as it is, plus where to put it: the import body is a SessionExport.
            body = ImportSession(
                session=golden.session,
                initial=golden.initial,
                events=golden.events,
                environment_id=env.id,
                agent=msgspec.Raw(
                    msgspec.json.encode({"type": "agent", "id": agent.id, "version": 1})  # type: ignore[attr-defined]
                ),
            )
            response = h.post(
                "/v1/sessions/import",
                content=msgspec.json.encode(body),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200, response.text
            imported[response.json()["id"]] = path.stem
        calls_before = len(script.requests)
        started = h.post(
            "/v1/evals",
            json={
                "sessions": {"session_ids": list(imported)},
                "cassette": True,
                "concurrency": 3,
            },
        )
        assert started.status_code == 200, started.text
        run = wait_run(h, started.json()["id"])
    assert run["status"] == "completed"
    assert run["counts"]["passed"] == len(GOLDEN), run["results"]
    assert len(script.requests) == calls_before, "a cassette re-run must not call the model"
    for result in run["results"]:
        golden = _load(next(p for p in GOLDEN if p.stem == imported[result["case_id"]]))
        rerun = wire_events(client, result["session_id"])
        recorded = [msgspec.json.decode(e) for e in golden.events]
        assert shape(rerun) == shape(recorded), imported[result["case_id"]]
