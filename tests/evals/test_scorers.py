"""Each scorer with a passing and a failing case; the rubric grader through the fake API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script

from sessiond.evals.scorers import ScoreContext, decode_scorers, score
from sessiond.evals.transcript import Transcript, build_transcript
from sessiond.runtime.providers.resilience import ModelClient, RetryPolicy
from sessiond.runtime.providers.routing import ProviderConfig, Router
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.content import TextBlock
from sessiond.runtime.wire.usage import SpanModelUsage
from sessiond.store.errors import InvalidInputError

pytestmark = pytest.mark.anyio
MODEL = "claude-sonnet-5-5"


def _usage(i: int, o: int) -> SpanModelUsage:
    return SpanModelUsage(
        input_tokens=i, output_tokens=o, cache_creation_input_tokens=0, cache_read_input_tokens=0
    )


def transcript(final: str = "The answer is 5.", *, seconds: int = 2) -> Transcript:
    events: list[ev.EventBase] = [
        ev.UserMessage(
            id="e1", processed_at="2026-01-01T00:00:00.000000Z", content=[TextBlock(text="add")]
        ),
        ev.SessionStatusRunning(id="e2", processed_at="2026-01-01T00:00:00.100000Z"),
        ev.SpanModelRequestStart(id="e3", processed_at="2026-01-01T00:00:00.200000Z"),
        ev.AgentToolUse(
            id="e4",
            processed_at="2026-01-01T00:00:00.300000Z",
            name="bash",
            input={"command": "echo $((2+3))", "timeout": 10},
        ),
        ev.SpanModelRequestEnd(
            id="e5",
            processed_at="2026-01-01T00:00:00.400000Z",
            model_request_start_id="e3",
            model_usage=_usage(100, 20),
        ),
        ev.SpanModelRequestStart(id="e6", processed_at="2026-01-01T00:00:00.500000Z"),
        ev.AgentMessage(
            id="e7", processed_at="2026-01-01T00:00:00.600000Z", content=[TextBlock(text=final)]
        ),
        ev.SpanModelRequestEnd(
            id="e8",
            processed_at="2026-01-01T00:00:00.700000Z",
            model_request_start_id="e6",
            model_usage=_usage(150, 30),
        ),
        ev.SessionStatusIdle(
            id="e9", processed_at=f"2026-01-01T00:00:0{seconds}.000000Z", stop_reason=ev.EndTurn()
        ),
    ]
    return build_transcript(events, model=MODEL)


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {"type": "exact", "value": "The answer is 5."},
        {"type": "exact", "value": "the answer is 5."},
    ),
    (
        {"type": "exact", "value": "the answer is 5.", "case_sensitive": False},
        {"type": "exact", "value": "5"},
    ),
    (
        {"type": "contains", "values": ["answer", "5"]},
        {"type": "contains", "values": ["answer", "6"]},
    ),
    ({"type": "regex", "pattern": r"answer is \d"}, {"type": "regex", "pattern": r"^\d+$"}),
    (
        {"type": "regex", "pattern": "THE ANSWER", "flags": "i"},
        {"type": "regex", "pattern": "THE ANSWER"},
    ),
    ({"type": "tool_called", "tool": "bash"}, {"type": "tool_called", "tool": "write"}),
    (
        {"type": "tool_called", "tool": "bash", "input": {"command": r"re:2\+3"}},
        {"type": "tool_called", "tool": "bash", "input": {"timeout": 99}},
    ),
    (
        {"type": "tool_called", "tool": "bash", "max_times": 1},
        {"type": "tool_called", "tool": "bash", "min_times": 2},
    ),
    ({"type": "max_turns", "value": 2}, {"type": "max_turns", "value": 1}),
    ({"type": "max_tokens", "value": 300}, {"type": "max_tokens", "value": 299}),
    ({"type": "max_cost", "usd": 0.01}, {"type": "max_cost", "usd": 0.0001}),
    ({"type": "max_latency", "seconds": 2.5}, {"type": "max_latency", "seconds": 1.5}),
    (
        {"type": "python", "callable": "scorer_fixtures:mentions_five"},
        {"type": "python", "callable": "scorer_fixtures:broken"},
    ),
]


@pytest.mark.parametrize(("passing", "failing"), CASES, ids=[c[0]["type"] for c in CASES])
async def test_scorer_passes_and_fails(passing: dict[str, Any], failing: dict[str, Any]) -> None:
    context = ScoreContext()
    good, bad = decode_scorers([passing, failing])
    ok = await score(good, transcript(), context)
    no = await score(bad, transcript(), context)
    assert ok.passed and ok.score == 1.0, ok
    assert not no.passed and no.score == 0.0, no
    assert no.detail  # a failing verdict always says why


async def test_json_schema_scorer_reads_fenced_json() -> None:
    schema = {
        "type": "object",
        "required": ["total"],
        "properties": {"total": {"type": "integer", "minimum": 0}},
    }
    [spec] = decode_scorers([{"type": "json_schema", "schema": schema}])
    good = await score(spec, transcript('Here:\n```json\n{"total": 5}\n```'), ScoreContext())
    wrong = await score(spec, transcript('{"total": "five"}'), ScoreContext())
    prose = await score(spec, transcript("five"), ScoreContext())
    assert good.passed
    assert not wrong.passed and "total" in wrong.detail
    assert not prose.passed and "not JSON" in prose.detail


async def test_python_scorer_may_return_a_grade() -> None:
    [spec] = decode_scorers([{"type": "python", "callable": "scorer_fixtures:half", "name": "h"}])
    result = await score(spec, transcript(), ScoreContext())
    assert (result.scorer, result.score, result.passed) == ("h", 0.5, True)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"type": "regex", "pattern": "("}, "bad pattern"),
        ({"type": "regex", "pattern": "a", "flags": "x"}, "unknown flag"),
        ({"type": "json_schema", "schema": {"type": "nonsense"}}, "invalid JSON schema"),
        ({"type": "python", "callable": "no_such_module:f"}, "cannot import"),
        ({"type": "python", "callable": "nocolon"}, "package.module:function"),
        ({"type": "contains"}, "value or values"),
        ({"type": "exact", "value": "x", "typo": 1}, "typo"),
        ({"type": "unknown"}, "unknown"),
    ],
)
def test_bad_scorer_specs_are_refused(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        decode_scorers([spec])
    assert needle in caught.value.message


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[Script, str]]:
    script = Script()
    with ThreadedServer(create_app(script)) as server:
        yield script, server.base_url


@pytest.fixture
async def grader(fake: tuple[Script, str]) -> AsyncIterator[tuple[Script, ModelClient]]:
    """A real ModelClient (retries, breaker) over the real SDK, closed with the test's loop."""
    script, base_url = fake
    script.reset()
    router = Router(
        [ProviderConfig(name="fake", kind="anthropic", models=["claude-*"], base_url=base_url)]
    )
    try:
        yield script, ModelClient(router, RetryPolicy(attempts=1, initial_s=0.01, max_s=0.01))
    finally:
        await router.close()


async def test_rubric_is_graded_by_a_model(grader: tuple[Script, ModelClient]) -> None:
    script, models = grader
    [spec] = decode_scorers(
        [{"type": "rubric", "rubric": "States the sum of 2 and 3.", "model": MODEL}]
    )
    context = ScoreContext(models=models)
    script.push(Reply(text='{"score": 0.9, "reasoning": "says five"}'))
    good = await score(spec, transcript(), context)
    script.push(Reply(text='Verdict: {"score": 0.1, "reasoning": "no sum"}'))
    bad = await score(spec, transcript("I do not know"), context)
    script.push(Reply(text="I cannot decide"))
    vague = await score(spec, transcript(), context)
    assert good.passed and good.score == 0.9 and "says five" in good.detail
    assert not bad.passed and bad.score == 0.1
    assert not vague.passed and "no score" in vague.detail
    sent = script.requests[0]
    assert sent["model"] == MODEL
    prompt = sent["messages"][0]["content"][0]["text"]
    assert "States the sum of 2 and 3." in prompt and "The answer is 5." in prompt


async def test_rubric_grader_failure_is_a_failed_verdict(
    grader: tuple[Script, ModelClient],
) -> None:
    from fakes.scripts import Fail

    script, models = grader
    script.push(Fail(status=400, message="bad grader request"))
    [spec] = decode_scorers([{"type": "rubric", "rubric": "anything", "model": MODEL}])
    result = await score(spec, transcript(), ScoreContext(models=models))
    assert not result.passed and result.detail.startswith("grader failed")
