"""Scorers: each turns a `Transcript` into a `ScoreResult` with a reason a person can act on.

Specs are JSON objects tagged by `type` (the same in suite files, the API and the CLI) and
are checked when decoded, so a bad regex, schema or import path is a 400 before anything
runs. Kinds: `exact`, `contains`, `regex`, `json_schema` (on the final message),
`tool_called`, `max_turns`, `max_tokens`, `max_cost`, `max_latency`, `python` (a callable
by import path) and `rubric` (model-graded, through any configured provider).

Scorers sent over HTTP are a tenant's input run inside the server, so each is bounded:
patterns run on the `regex` library with a timeout (a backtracking pattern cannot hold the
server: stdlib `re` has no timeout and keeps the GIL), off the event loop; JSON schemas
never fetch a remote `$ref`; anything a scorer raises is a failed verdict.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import jsonschema
import msgspec
import referencing
import referencing.exceptions
import regex

from sessiond.evals.results import ScoreResult
from sessiond.evals.transcript import Transcript
from sessiond.runtime.engine.pricing import Price, cost_usd
from sessiond.runtime.providers import base as pb
from sessiond.store.errors import AppError, InvalidInputError

_SHOW = 200
PATTERN_TIMEOUT_S = 1.0
"""How long one pattern may search one text before the scorer fails."""


class _Spec(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    name: str | None = None


class Exact(_Spec, tag="exact", frozen=True, kw_only=True):
    value: str
    case_sensitive: bool = True
    strip: bool = True


class Contains(_Spec, tag="contains", frozen=True, kw_only=True):
    value: str | None = None
    values: list[str] = []
    """All must appear."""
    case_sensitive: bool = False


class Regex(_Spec, tag="regex", frozen=True, kw_only=True):
    pattern: str
    flags: str = ""
    """Letters: i (ignore case), m (multiline), s (dot matches newline)."""


class JsonSchema(_Spec, tag="json_schema", frozen=True, kw_only=True):
    schema: dict[str, Any]


class ToolCalled(_Spec, tag="tool_called", frozen=True, kw_only=True):
    tool: str
    input: dict[str, Any] | None = None
    """Subset match; a string value starting with `re:` is a regex."""
    min_times: int = 1
    max_times: int | None = None


class MaxTurns(_Spec, tag="max_turns", frozen=True, kw_only=True):
    value: int


class MaxTokens(_Spec, tag="max_tokens", frozen=True, kw_only=True):
    value: int


class MaxCost(_Spec, tag="max_cost", frozen=True, kw_only=True):
    usd: float


class MaxLatency(_Spec, tag="max_latency", frozen=True, kw_only=True):
    seconds: float


class PythonScorer(_Spec, tag="python", frozen=True, kw_only=True):
    callable: str
    """`package.module:function`; called with the Transcript, returns bool, a float in
    [0, 1], (bool, reason) or a ScoreResult."""


class Rubric(_Spec, tag="rubric", frozen=True, kw_only=True):
    rubric: str
    model: str | None = None
    pass_threshold: float = 0.5


ScorerSpec = (
    Exact
    | Contains
    | Regex
    | JsonSchema
    | ToolCalled
    | MaxTurns
    | MaxTokens
    | MaxCost
    | MaxLatency
    | PythonScorer
    | Rubric
)

_decode_list = msgspec.json.Decoder(list[ScorerSpec]).decode
_convert_opts: dict[str, Any] = {"strict": True}


class ScoreContext(msgspec.Struct, kw_only=True):
    """What scorers may use besides the transcript."""

    models: Any = None
    """A `Models` (runtime/engine/loop.py) for model-graded scorers; None disables them."""
    pricing: Mapping[str, Price] = {}
    grader_model: str | None = None
    python_modules: frozenset[str] | None = None
    """Modules `python` scorers may come from; None allows any (the local CLI)."""


def _flags(letters: str) -> int:
    table = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}
    value = 0
    for letter in letters:
        if letter not in table:
            raise InvalidInputError(f"regex flags: unknown flag {letter!r} (use i, m, s)")
        value |= table[letter]
    return value


def _check(spec: ScorerSpec, where: str, python_modules: frozenset[str] | None) -> None:
    if isinstance(spec, Regex):
        _compile(spec.pattern, _flags(spec.flags), where)
    elif isinstance(spec, JsonSchema):
        try:
            jsonschema.Draft202012Validator.check_schema(spec.schema)
        except jsonschema.SchemaError as exc:
            raise InvalidInputError(f"{where}: invalid JSON schema: {exc.message}") from exc
        except (RecursionError, OverflowError, ValueError) as exc:
            raise InvalidInputError(f"{where}: unusable JSON schema: {exc}") from exc
    elif isinstance(spec, ToolCalled):
        for key, value in (spec.input or {}).items():
            if isinstance(value, str) and value.startswith("re:"):
                _compile(value[3:], 0, f"{where}: input.{key}")
    elif isinstance(spec, Contains):
        if spec.value is None and not spec.values:
            raise InvalidInputError(f"{where}: contains needs value or values")
    elif isinstance(spec, PythonScorer):
        _load_callable(spec.callable, where, python_modules)
    elif isinstance(spec, Rubric) and not 0 <= spec.pass_threshold <= 1:
        raise InvalidInputError(f"{where}: pass_threshold must be within [0, 1]")


def _compile(pattern: str, flags: int, where: str) -> None:
    try:
        regex.compile(pattern, flags)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        raise InvalidInputError(f"{where}: bad pattern {_cut(pattern)!r}: {exc}") from exc


def _search(pattern: str, text: str, flags: int = 0) -> regex.Match[str] | None:
    """A user's pattern over a text, bounded in time (raises TimeoutError past it)."""
    return regex.search(pattern, text, flags, timeout=PATTERN_TIMEOUT_S, concurrent=True)


def _no_remote_schemas(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(uri)  # a scorer never fetches a URL


_SCHEMAS: referencing.Registry[Any] = referencing.Registry(retrieve=_no_remote_schemas)  # type: ignore[call-arg]


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """`pattern`, on the regex library with a timeout (jsonschema's own uses stdlib re)."""
    if validator.is_type(instance, "string") and _search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{_cut(instance)!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    """`patternProperties`, likewise bounded."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties},
)
"""Draft 2020-12 with every pattern a tenant gives bounded in time."""


def _require_allowed(path: str, where: str, modules: frozenset[str] | None) -> None:
    """Refuse a callable outside the allowed modules, before anything is imported: naming
    any importable callable over HTTP ran arbitrary code in the server (`sys:exit`)."""
    if modules is None:
        return
    module_name, _, attr = path.partition(":")
    if not _allowed_module(module_name, modules) or not attr.isidentifier():
        raise InvalidInputError(
            f"{where}: python scorers run on this server only as a function named in one of "
            f"the modules its operator allows (SESSIOND_PYTHON_SCORER_MODULES), as "
            f"`module:function`; {path!r} is not one",
            code="python_scorer_not_allowed",
        )


def _allowed_module(name: str, modules: frozenset[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def _load_callable(
    path: str, where: str = "python", modules: frozenset[str] | None = None
) -> Callable[[Transcript], Any]:
    """The callable at `module:attr.path`. With an allow-list, it must be a function of
    one of those modules, not something they imported (`allowed:os.system`)."""
    _require_allowed(path, where, modules)
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"{where}: callable must look like package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where}: cannot import {path!r}: {exc}") from exc
    if not callable(target):
        raise InvalidInputError(f"{where}: {path!r} is not callable")
    home = getattr(target, "__module__", None)
    if modules is not None and not (isinstance(home, str) and _allowed_module(home, modules)):
        raise InvalidInputError(
            f"{where}: {path!r} is defined in {home!r}, not in a module this server allows "
            "(SESSIOND_PYTHON_SCORER_MODULES)",
            code="python_scorer_not_allowed",
        )
    return target  # type: ignore[no-any-return]


def decode_scorers(
    raw: bytes | Sequence[Any],
    where: str = "scorers",
    *,
    python_modules: frozenset[str] | None = None,
) -> list[ScorerSpec]:
    """Decode and check scorer specs; any problem is an InvalidInputError naming it.

    `python_modules` bounds where `python` scorers may come from (None: anywhere, for the
    local CLI; the server passes its operator's allow-list, empty by default).
    """
    if not isinstance(raw, bytes | bytearray | list | tuple):
        raise InvalidInputError(f"{where}: expected a list of scorers", code="invalid_scorer")
    try:
        if isinstance(raw, bytes | bytearray):
            specs = _decode_list(raw)
        else:
            specs = msgspec.convert(list(raw), list[ScorerSpec], **_convert_opts)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"{where}: {exc}", code="invalid_scorer") from exc
    for index, spec in enumerate(specs):
        _check(spec, f"{where}[{index}]", python_modules)
    return specs


def _cut(text: str) -> str:
    return text if len(text) <= _SHOW else text[:_SHOW] + "…"


def _result(spec: ScorerSpec, passed: bool, detail: str, score: float | None = None) -> ScoreResult:
    return ScoreResult(
        scorer=spec.name or spec.__struct_config__.tag,  # type: ignore[arg-type]
        passed=passed,
        score=(1.0 if passed else 0.0) if score is None else score,
        detail=detail,
    )


def _json_in(text: str) -> Any:
    fenced = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.DOTALL)
    return json.loads(fenced.group(1) if fenced else text)


def _input_matches(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    for key, want in expected.items():
        if key not in actual:
            return False
        got = actual[key]
        if isinstance(want, str) and want.startswith("re:"):
            if not isinstance(got, str) or _search(want[3:], got) is None:
                return False
        elif got != want:
            return False
    return True


async def score(spec: ScorerSpec, transcript: Transcript, context: ScoreContext) -> ScoreResult:
    """One scorer's verdict (scorer bugs and grader failures are failed verdicts, not raises)."""
    match spec:
        case PythonScorer():
            _require_allowed(spec.callable, "python", context.python_modules)
            # In a worker thread: the user's code must not block the server's loop.
            return await anyio.to_thread.run_sync(
                _call_python, spec, transcript, context.python_modules
            )
        case Rubric():
            return await _grade(spec, transcript, context)
    # Patterns and schemas run in a worker thread too (the `regex` search lets go of the
    # GIL), each bounded by its timeout.
    try:
        return await anyio.to_thread.run_sync(_score_here, spec, transcript, context)
    except TimeoutError:
        return _result(spec, False, f"the pattern took longer than {PATTERN_TIMEOUT_S:g} s")
    except Exception as exc:  # a schema that cannot resolve a `$ref`, say
        return _result(spec, False, f"the scorer failed: {type(exc).__name__}: {_cut(str(exc))}")


def _score_here(spec: ScorerSpec, transcript: Transcript, context: ScoreContext) -> ScoreResult:
    text = transcript.final_text
    match spec:
        case Exact():
            got, want = (text.strip(), spec.value.strip()) if spec.strip else (text, spec.value)
            if not spec.case_sensitive:
                got, want = got.lower(), want.lower()
            ok = got == want
            return _result(spec, ok, f"expected {_cut(spec.value)!r}, got {_cut(text)!r}")
        case Contains():
            wanted = ([spec.value] if spec.value is not None else []) + list(spec.values)
            haystack = text if spec.case_sensitive else text.lower()
            missing = [
                w for w in wanted if (w if spec.case_sensitive else w.lower()) not in haystack
            ]
            detail = f"missing {missing!r} in {_cut(text)!r}" if missing else "all found"
            return _result(spec, not missing, detail)
        case Regex():
            found = _search(spec.pattern, text, _flags(spec.flags))
            detail = f"matched {found.group(0)!r}" if found else f"no match in {_cut(text)!r}"
            return _result(spec, found is not None, detail)
        case JsonSchema():
            try:
                value = _json_in(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                return _result(spec, False, f"final message is not JSON: {exc}")
            validator = _Validator(spec.schema, registry=_SCHEMAS)
            errors = sorted(validator.iter_errors(value), key=str)
            if errors:
                first = errors[0]
                path = "/".join(str(p) for p in first.absolute_path) or "(root)"
                return _result(spec, False, f"{path}: {first.message}")
            return _result(spec, True, "valid")
        case ToolCalled():
            named = [c for c in transcript.tool_calls if c.name == spec.tool]
            hits = [c for c in named if spec.input is None or _input_matches(spec.input, c.input)]
            ok = len(hits) >= spec.min_times and (
                spec.max_times is None or len(hits) <= spec.max_times
            )
            bound = f"{spec.min_times}..{spec.max_times if spec.max_times is not None else '∞'}"
            detail = f"{spec.tool} called {len(hits)} time(s) matching (wanted {bound})"
            if named and not hits:
                detail += f"; inputs seen: {_cut(json.dumps(named[0].input))}"
            return _result(spec, ok, detail)
        case MaxTurns():
            ok = transcript.turns <= spec.value
            return _result(spec, ok, f"{transcript.turns} model requests (max {spec.value})")
        case MaxTokens():
            used = transcript.input_tokens + transcript.output_tokens
            return _result(spec, used <= spec.value, f"{used} tokens (max {spec.value})")
        case MaxCost():
            cost = cost_usd(
                transcript.model,
                transcript.input_tokens,
                transcript.output_tokens,
                context.pricing,
            )
            if cost is None:
                return _result(spec, False, f"no price known for model {transcript.model!r}")
            return _result(spec, cost <= spec.usd, f"${cost:.6f} (max ${spec.usd:g})")
        case MaxLatency():
            took = transcript.latency_s
            return _result(spec, took <= spec.seconds, f"{took:.3f}s (max {spec.seconds:g}s)")
    raise AssertionError(f"unhandled scorer {spec!r}")


def _call_python(
    spec: PythonScorer, transcript: Transcript, modules: frozenset[str] | None
) -> ScoreResult:
    try:
        value = _load_callable(spec.callable, "python", modules)(transcript)
    except BaseException as exc:
        # The user's code: whatever it raises (SystemExit and KeyboardInterrupt included;
        # it runs in a worker thread, so no cancellation of ours can land here) is a
        # failed verdict, never something that reaches the server.
        return _result(spec, False, f"{spec.callable} raised {type(exc).__name__}: {exc}")
    if isinstance(value, ScoreResult):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return _result(spec, bool(value[0]), str(value[1]))
    if isinstance(value, bool):
        return _result(spec, value, f"{spec.callable} returned {value}")
    if isinstance(value, int | float):
        grade = min(1.0, max(0.0, float(value)))
        return _result(spec, grade >= 0.5, f"{spec.callable} scored {grade:g}", grade)
    return _result(spec, False, f"{spec.callable} returned {type(value).__name__}, not a verdict")


_GRADER_SYSTEM = (
    "You grade an AI agent's conversation against a rubric. Read the conversation and the "
    'rubric, then answer with one JSON object and nothing else: {"score": <number from 0 '
    'to 1>, "reasoning": "<one or two sentences>"}.'
)


def _conversation(transcript: Transcript, limit: int = 12_000) -> str:
    lines: list[str] = []
    for event in transcript.events:
        if event.type == "user.message":
            lines.append("USER: " + _plain(event))
        elif event.type == "agent.message":
            lines.append("AGENT: " + _plain(event))
        elif event.type in ("agent.tool_use", "agent.custom_tool_use", "agent.mcp_tool_use"):
            payload = json.dumps(getattr(event, "input", {}))[:500]
            lines.append(f"AGENT CALLS {getattr(event, 'name', '?')}: {payload}")
        elif event.type == "agent.tool_result":
            lines.append("TOOL RESULT: " + _plain(event)[:500])
    text = "\n".join(lines)
    return text if len(text) <= limit else "…" + text[-limit:]


def _plain(event: Any) -> str:
    blocks = getattr(event, "content", None) or []
    return "".join(getattr(b, "text", "") for b in blocks)


def _parse_grade(reply: str) -> tuple[float, str] | None:
    for found in re.finditer(r"\{.*?\}", reply, re.DOTALL):
        try:
            value = json.loads(found.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("score"), int | float):
            return min(1.0, max(0.0, float(value["score"]))), str(value.get("reasoning", ""))
    words = re.findall(r"\b(PASS|FAIL)\b", reply.upper())
    if words:
        return (1.0 if words[-1] == "PASS" else 0.0), reply.strip()[:_SHOW]
    return None


async def _grade(spec: Rubric, transcript: Transcript, context: ScoreContext) -> ScoreResult:
    if context.models is None:
        return _result(spec, False, "no model client to grade with")
    model = spec.model or context.grader_model or transcript.model
    if not model:
        return _result(spec, False, "no grader model: set `model` on the rubric scorer")
    prompt = (
        f"<conversation>\n{_conversation(transcript)}\n</conversation>\n\n"
        f"<rubric>\n{spec.rubric}\n</rubric>"
    )
    request = pb.ModelRequest(
        model=model,
        system=_GRADER_SYSTEM,
        messages=[pb.Message(role="user", content=[pb.TextBlock(text=prompt)])],
        max_tokens=1024,
    )
    try:
        response = await context.models.complete(
            request, on_delta=None, on_attempt_failed=None, on_fallback=None
        )
    except AppError as exc:
        return _result(spec, False, f"grader failed: {exc.message}")
    reply = "".join(b.text for b in response.content if isinstance(b, pb.TextBlock))
    parsed = _parse_grade(reply)
    if parsed is None:
        return _result(spec, False, f"grader reply has no score: {_cut(reply)!r}")
    grade, reasoning = parsed
    ok = grade >= spec.pass_threshold
    return _result(
        spec, ok, f"graded {grade:g} (pass ≥ {spec.pass_threshold:g}): {reasoning}", grade
    )


async def score_all(
    specs: Sequence[ScorerSpec], transcript: Transcript, context: ScoreContext
) -> list[ScoreResult]:
    """Every scorer's verdict, in order."""
    return [await score(spec, transcript, context) for spec in specs]
