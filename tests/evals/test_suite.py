"""Suite files: YAML and JSON, and a clear error for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sessiond.evals.scorers import Contains, MaxTurns
from sessiond.evals.suite import load_suite, parse_suite
from sessiond.store.errors import InvalidInputError

YAML = """
name: greetings
agent: agent_x
repeats: 2
pricing: {"claude-*": {input_per_mtok: 1, output_per_mtok: 2}}
scorers: [{type: max_turns, value: 4}]
cases:
  - id: hello
    input: Say hello
    scorers: [{type: contains, value: hello}]
  - id: chat
    turns: [hi, "what did I say?"]
    repeats: 5
  - id: tools
    events: [{type: user.message, content: [{type: text, text: look it up}]}]
    tool_results: {lookup: "42"}
    confirm: deny
    outcome: {description: an answer, rubric: "Gives 42"}
"""


def test_yaml_and_json_files_load_the_same(tmp_path: Path) -> None:
    yaml_path = tmp_path / "suite.yaml"
    yaml_path.write_text(YAML)
    suite = load_suite(yaml_path)
    import yaml

    json_path = tmp_path / "suite.json"
    json_path.write_text(json.dumps(yaml.safe_load(YAML)))
    assert load_suite(json_path) == suite
    assert suite.name == "greetings" and suite.agent == "agent_x" and suite.repeats == 2
    assert suite.scorers == [MaxTurns(value=4)]
    hello, chat, tools = suite.cases
    assert hello.scorers == [Contains(value="hello")]
    assert hello.turn_events(0) == [
        {"type": "user.message", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert chat.turn_count() == 2 and chat.repeats == 5
    assert chat.turn_events(1)[0]["content"][0]["text"] == "what did I say?"
    first = tools.turn_events(0)
    assert [e["type"] for e in first] == ["user.message", "user.define_outcome"]
    assert first[1]["rubric"] == {"type": "text", "content": "Gives 42"}
    assert tools.confirm == "deny" and tools.tool_results == {"lookup": "42"}
    assert suite.pricing["claude-*"].output_per_mtok == 2


@pytest.mark.parametrize(
    ("suite", "needle"),
    [
        ({}, "cases"),
        ({"cases": []}, "cases"),
        ({"cases": [{"id": "a"}]}, "exactly one of input"),
        ({"cases": [{"id": "a", "input": "x", "turns": ["y"]}]}, "exactly one of input"),
        ({"cases": [{"id": "a", "turns": []}]}, "turns must not be empty"),
        ({"cases": [{"id": "a", "input": "x"}, {"id": "a", "input": "y"}]}, "duplicate case id"),
        ({"cases": [{"id": " ", "input": "x"}]}, "id must not be empty"),
        ({"cases": [{"id": "a", "input": "x", "repeats": 0}]}, "repeats"),
        ({"cases": [{"id": "a", "input": "x", "confirm": "maybe"}]}, "confirm"),
        ({"cases": [{"id": "a", "input": "x", "scorers": [{"type": "regex"}]}]}, "cases[0] (a)"),
        ({"cases": [{"id": "a", "input": "x", "colour": "red"}]}, "colour"),
        (
            {"scorers": [{"type": "max_turns"}], "cases": [{"id": "a", "input": "x"}]},
            "suite.scorers",
        ),
    ],
)
def test_bad_suites_are_refused_with_the_place(suite: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_suite(suite)
    assert needle in caught.value.message


def test_unparseable_files_say_so(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("cases: [unclosed")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        load_suite(broken)
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_suite(tmp_path / "missing.json")


def test_the_example_suite_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "evals" / "support-suite.yaml"
    suite = load_suite(example)
    assert {c.id for c in suite.cases} >= {"greeting", "order-status", "follow-up"}
