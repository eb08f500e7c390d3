"""Fuzz every route: arbitrary JSON, broken create bodies, deep nesting, junk query strings.

The property is the same everywhere: whatever a client sends, the answer is never a 5xx,
and every 4xx carries the Anthropic error body `{"type": "error", "error": {type, message}}`.

Routes are enumerated from the Starlette app itself, so a route added later is fuzzed
without touching this file. Path parameters are drawn from the ids of real resources
(made once per module with the admin key: an agent, an environment, a live session with
an event, an imported session, an eval run, an API key) as well as junk, so handlers are
exercised past their 404 checks; deletes, archives and revokes act on throwaway copies.
SSE stream routes never end, so they only get a separate check that bad resume/query
parameters are refused up front.

When a property fails, the captured log of the failing test holds the server's traceback
(the `sessiond.api` logger).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eval_harness import eval_server
from harness import ADMIN_KEY, RunningServer, user_message
from hypothesis import given
from hypothesis import strategies as st
from starlette.routing import Route

# -- the world the fuzzer aims at ---------------------------------------------------------

DEFAULT_WORKSPACE = "wrkspc_default"  # the workspace the admin key acts in
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@dataclass(frozen=True)
class Endpoint:
    """One (method, route) pair of the app."""

    method: str
    path: str
    params: tuple[str, ...]

    @property
    def destructive(self) -> bool:
        """Deletes, archives or revokes what its path names (fuzzed on throwaway resources)."""
        return self.method == "DELETE" or self.path.endswith(("/archive", "/revoke"))


class World:
    """Real resources made with the admin key, and the app's routes."""

    def __init__(
        self,
        *,
        ids: dict[str, list[str]],
        event_id: str,
        endpoints: list[Endpoint],
        streams: list[Endpoint],
    ) -> None:
        self.ids = ids
        """Path parameter name -> real ids of that kind (the first is the main one)."""
        self.event_id = event_id
        self.endpoints = endpoints
        self.streams = streams

    def __repr__(self) -> str:  # falsifying examples print it: keep it short
        return f"World(ids={self.ids!r}, event_id={self.event_id!r})"

    def main(self, name: str) -> str:
        return self.ids[name][0]

    def real_ids(self) -> list[str]:
        return sorted({*(i for ids in self.ids.values() for i in ids), self.event_id})


def endpoints_of(app: Any) -> tuple[list[Endpoint], list[Endpoint]]:
    """(plain endpoints, SSE stream endpoints) of a Starlette app; /health is left out."""
    plain: list[Endpoint] = []
    streams: list[Endpoint] = []
    for route in app.routes:
        if not isinstance(route, Route) or route.path == "/health":
            continue
        params = tuple(_PARAM.findall(route.path))
        for method in sorted((route.methods or set()) - {"HEAD"}):
            endpoint = Endpoint(method, route.path, params)
            (streams if route.path.endswith("/stream") else plain).append(endpoint)
    return plain, streams


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server for the module, started as tests/api/conftest.py starts it but with
    the engine on and the deterministic fake model of tests/eval_harness.py: without the
    engine `POST /v1/evals` refuses every body before validating it, and no eval run would
    exist to aim the `/v1/evals/{run_id}` routes at."""
    with eval_server(tmp_path_factory.mktemp("fuzz")) as (running, _script):
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """Plain httpx with the admin key. No keep-alive: after an unhandled exception uvicorn
    drops the connection, which must not turn the *next* request into a transport error."""
    with httpx.Client(
        base_url=server.base_url,
        headers={"x-api-key": ADMIN_KEY},
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        yield client


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def imported_log() -> list[dict[str, Any]]:
    """A small, coherent log to import: a tool call and its result, and a final message
    that is JSON (so `json_schema` scorers have something to check in a replay)."""
    return [
        {"id": "e1", "type": "user.message", "content": [{"type": "text", "text": "hi"}]},
        {
            "id": "e2",
            "type": "agent.tool_use",
            "name": "bash",
            "input": {"command": "ls", "nested": {"a": [1, {"b": 2}]}},
        },
        {
            "id": "e3",
            "type": "agent.tool_result",
            "tool_use_id": "e2",
            "content": [{"type": "text", "text": "out"}],
        },
        {
            "id": "e4",
            "type": "agent.message",
            "content": [{"type": "text", "text": '```json\n{"a": "x", "n": 1}\n```'}],
        },
        {"id": "e5", "type": "session.status_idle", "stop_reason": {"type": "end_turn"}},
    ]


@pytest.fixture(scope="module")
def world(server: RunningServer, http: httpx.Client) -> World:
    agent = _ok(http.post("/v1/agents", json={"name": "fuzz", "model": "claude-sonnet-4-5"}))
    env = _ok(http.post("/v1/environments", json={"name": "fuzz"}))
    session = _ok(
        http.post("/v1/sessions", json={"agent": agent["id"], "environment_id": env["id"]})
    )
    sent = _ok(
        http.post(f"/v1/sessions/{session['id']}/events", json={"events": [user_message("hi")]})
    )
    imported = _ok(
        http.post(
            "/v1/sessions/import",
            json={
                "environment_id": env["id"],
                "session": {"agent": {"id": agent["id"], "version": 1}, "title": "imported"},
                "events": imported_log(),
            },
        )
    )
    run = _ok(
        http.post(
            "/v1/evals",
            json={"suite": {"cases": [{"id": "c", "input": "hi"}]}, "agent_id": agent["id"]},
        )
    )
    key = _ok(http.post("/v1/api_keys", json={"workspace_id": DEFAULT_WORKSPACE, "name": "fuzz"}))
    ids = {
        "agent_id": [agent["id"]],
        "environment_id": [env["id"]],
        "session_id": [session["id"], imported["id"]],
        "run_id": [run["id"]],
        "key_id": [key["id"]],
    }
    plain, streams = endpoints_of(server.app)
    assert plain and streams
    return World(ids=ids, event_id=sent["data"][0]["id"], endpoints=plain, streams=streams)


# -- JSON values ---------------------------------------------------------------------------

_BIG_INTS = [10**30, -(2**70), 2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**4000]
_BIG_FLOATS = [1e30, -1e30, 1e308, 5e-324, 1e18, -0.0]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(_BIG_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(_BIG_FLOATS),
    st.text(max_size=30),
    st.sampled_from(["", "agent", "user.message", "next", "prev", "page_", "\x00", "é" * 5]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` levels deep, spliced in as text (never built by recursion)."""

    depth: int
    shape: str  # "list" or "dict"

    def text(self) -> str:
        if self.shape == "list":
            return "[" * self.depth + "1" + "]" * self.depth
        return '{"a":' * self.depth + "1" + "}" * self.depth


# 960-975 sits just under the depth the body decoder gives up at, so a value that gets past
# it reaches the decoders and encoders behind it at a deeper stack.
_DEPTHS = [600, 960, 966, 970, 972, 975, 1000, 3000, 5000]
deep_values = st.builds(
    Deep, depth=st.sampled_from(_DEPTHS), shape=st.sampled_from(["list", "dict"])
)
_SPLICE = "\x00__deep__\x00"


def encode_body(value: Any) -> bytes:
    """JSON text of `value`, with every `Deep` spliced in."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, Deep):
        return value.text().encode()
    deep: list[Deep] = []

    def mark(v: Any) -> Any:
        if isinstance(v, Deep):
            deep.append(v)
            return _SPLICE
        if isinstance(v, list):
            return [mark(x) for x in v]
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        return v

    text = json.dumps(mark(value), allow_nan=False)
    for d in deep:
        text = text.replace(json.dumps(_SPLICE), d.text(), 1)
    return text.encode()


raw_bodies = st.sampled_from(
    [b"", b" ", b"{", b"[", b"nul", b"\xff\xfe", b'"\\ud800"', b'{"a":"\\udfff"}', b"1e400"]
) | st.binary(max_size=24)


# -- junk for every slot ------------------------------------------------------------------

_JUNK_NUMBERS: list[Any] = [10**30, -(2**70), 2**63, 2**63 - 1, 1e30, -1, 0, 1.5, 10**4000]
_JUNK_STRINGS = [
    "",
    "x",
    "9" * 5000,
    "\u00b2",
    "page_",
    # Strings that mean something to what reads them: a regex repetition past the engine's
    # limit and one nested too deep, a relative module path and an exiting callable for
    # `python` scorers, JSON pointers to nowhere for `json_schema`.
    "a{4294967296}",
    "re:a{4294967296}",
    "(" * 600 + ")" * 600,
    ".x:y",
    "sys:exit",
    "#/nope",
    "#/$defs/nope",
    "urn:nope",
]
_JUNK = [*_JUNK_NUMBERS, *_JUNK_STRINGS, None, True, [], {}, [1e30], {"type": "agent"}]
junk_values = st.sampled_from(_JUNK) | json_values | deep_values


def junk_for(original: Any) -> st.SearchStrategy[Any]:
    """Junk to put where `original` was: often of its own kind, else anything."""
    if isinstance(original, str):
        return st.sampled_from(_JUNK_STRINGS) | junk_values
    if isinstance(original, int | float) and not isinstance(original, bool):
        return st.sampled_from(_JUNK_NUMBERS) | junk_values
    return junk_values


def cursor(parts: Any) -> str:
    """A `page_…` cursor carrying any JSON (see api/pagination.py)."""
    raw = json.dumps(parts).encode()
    return "page_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


_CURSOR_PARTS: list[Any] = [
    [1e30],
    [1e30, "x"],
    ["a", "b", "next"],
    ["a", "b", "prev"],
    [10**30],
    [2**63],
    [-1],
    [0],
    [1e30, "x", "next"],
    [10**30, "x", "prev"],
    ["a", 10**30],
    [None, None, "next"],
    [[1], {"a": 1}, "next"],
    [],
    {"a": 1},
    "page_",
]
cursors = st.one_of(
    st.sampled_from(_CURSOR_PARTS).map(cursor),
    st.lists(json_scalars, max_size=4).map(cursor),
    json_values.map(cursor),
    st.sampled_from(["page_", "page_!!!", "page_" + "A" * 11, "garbage", "page_e30="]),
)
_NUMBERS = [
    "1e20",
    "-1",
    "0",
    "1",
    "1.5",
    "99999999999999999999999",
    str(2**63),
    "1e18",
    "nan",
    "\u00b2",  # a digit to str.isdigit, not to int()
    "9" * 5000,  # past int()'s 4300-digit limit
]
_TIMES = [
    "1e18",
    "-1e18",
    "1e20",
    "1e12",
    "-1e11",
    "nan",
    "inf",
    "1700000000",
    "2026-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
]
_WORDS = [
    "",
    "true",
    "false",
    "asc",
    "desc",
    "next",
    "live",
    "html",
    "json",
    "garbage",
    "x:1",
    "idle",
    "user.message",
    "session.status_idle",
]


def query_values(world: World, key: str) -> st.SearchStrategy[str]:
    """Junk for one query parameter: some aimed at its kind, some not."""
    aimed: st.SearchStrategy[str]
    if key == "page":
        aimed = cursors
    elif key.startswith("created_at"):
        aimed = st.sampled_from(_TIMES)
    elif key in ("limit", "version", "agent_version"):
        aimed = st.sampled_from(_NUMBERS)
    elif key in ("after", "agent_id", "with", "baseline", "workspace_id"):
        ids = world.real_ids()
        versions = st.sampled_from(_NUMBERS)
        aimed = st.sampled_from(ids) | st.tuples(st.sampled_from(ids), versions).map(":".join)
    else:
        aimed = st.sampled_from(_WORDS)
    anything = st.sampled_from([*_NUMBERS, *_TIMES, *_WORDS]) | st.text(max_size=20) | cursors
    return st.one_of(aimed, aimed, anything)


QUERY_KEYS = [
    "limit",
    "page",
    "order",
    "version",
    "created_at[gt]",
    "created_at[lt]",
    "created_at[gte]",
    "created_at[lte]",
    "after",
    "include_archived",
    "types[]",
    "statuses[]",
    "agent_id",
    "agent_version",
    "with",
    "baseline",
    "format",
    "from",
    "workspace_id",
]


def queries(world: World) -> st.SearchStrategy[list[tuple[str, str]]]:
    pairs = st.sampled_from(QUERY_KEYS).flatmap(
        lambda key: st.tuples(st.just(key), query_values(world, key))
    )
    return st.lists(pairs, min_size=1, max_size=6)


# -- path parameters ----------------------------------------------------------------------

_JUNK_IDS = [
    "x",
    "agent_00000000000000000000000000",
    "sesn_00000000000000000000000000",
    "evrun_zzzzzzzzzzzzzzzzzzzzzzzzzz",
    "env_",
    "a" * 300,
    "null",
    "-1",
    "1e30",
    "%",
    "é",
    "import",
]


def path_value(world: World, name: str) -> st.SearchStrategy[tuple[str, str]]:
    """("real", id) for the parameter's own kind, ("id", other real id) or ("junk", text)."""
    own = world.ids.get(name)
    choices: list[st.SearchStrategy[tuple[str, str]]] = []
    if own:
        choices += [st.sampled_from(own).map(lambda v: ("real", v))] * 3
    choices.append(st.sampled_from(world.real_ids()).map(lambda v: ("id", v)))
    choices.append(
        (st.sampled_from(_JUNK_IDS) | st.text(min_size=1, max_size=40)).map(lambda v: ("junk", v))
    )
    return st.one_of(*choices)


def fresh(http: httpx.Client, world: World, name: str) -> str | None:
    """A throwaway resource of the kind `name` names, for destructive routes."""
    if name == "agent_id":
        made = http.post("/v1/agents", json={"name": "throwaway", "model": "claude-sonnet-4-5"})
    elif name == "environment_id":
        made = http.post("/v1/environments", json={"name": "throwaway"})
    elif name == "key_id":
        made = http.post(
            "/v1/api_keys", json={"workspace_id": DEFAULT_WORKSPACE, "name": "throwaway"}
        )
    elif name == "session_id":
        made = http.post(
            "/v1/sessions",
            json={"agent": world.main("agent_id"), "environment_id": world.main("environment_id")},
        )
    else:
        return None
    assert made.status_code == 200, made.text
    return made.json()["id"]  # type: ignore[no-any-return]


def build_path(
    http: httpx.Client, world: World, endpoint: Endpoint, values: dict[str, tuple[str, str]]
) -> str:
    filled: dict[str, str] = {}
    for name in endpoint.params:
        kind, value = values[name]
        if endpoint.destructive and value in world.ids.get(name, []):
            value = fresh(http, world, name) or value
        filled[name] = urllib.parse.quote(value, safe="") if kind == "junk" else value
    return _PARAM.sub(lambda m: filled[m.group(1)], endpoint.path)


def real_paths(world: World, endpoint: Endpoint) -> st.SearchStrategy[dict[str, tuple[str, str]]]:
    return st.fixed_dictionaries(
        {
            name: st.sampled_from(world.ids[name]).map(lambda v: ("real", v))
            for name in endpoint.params
        }
    )


def paths(world: World, endpoint: Endpoint) -> st.SearchStrategy[dict[str, tuple[str, str]]]:
    return st.fixed_dictionaries({name: path_value(world, name) for name in endpoint.params})


# -- valid-looking bodies for the create endpoints ----------------------------------------


def templates(world: World) -> dict[tuple[str, str], list[Any]]:
    """Bodies that are valid (or nearly) for the main endpoints; the fuzzer breaks one field."""
    agent, env = world.main("agent_id"), world.main("environment_id")
    session, event = world.main("session_id"), world.event_id
    ref = {"type": "agent", "id": agent, "version": 1}
    scorers = [
        {"type": "contains", "value": "x"},
        {"type": "regex", "pattern": "e.h?o", "flags": "i"},
        {"type": "tool_called", "tool": "bash", "input": {"command": "re:l."}},
        {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/text"}},
                "$defs": {"text": {"type": "string"}},
            },
        },
        {"type": "max_cost", "usd": 1.0},
    ]
    suite = {
        "name": "fuzz",
        "scorers": [{"type": "max_turns", "value": 3}],
        "cases": [
            {"id": "c1", "input": "hi", "scorers": [{"type": "contains", "value": "hi"}]},
            {"id": "c2", "turns": ["a", "b"], "tool_results": {"t": "x"}, "repeats": 1},
        ],
    }
    return {
        ("POST", "/v1/agents"): [
            {
                "name": "fuzz",
                "model": {"id": "claude-sonnet-4-5", "effort": {"type": "high"}},
                "description": "d",
                "system": "s",
                "tools": [
                    {"type": "agent_toolset_20260401"},
                    {
                        "type": "custom",
                        "name": "lookup",
                        "description": "d",
                        "input_schema": {
                            "type": "object",
                            "properties": {"q": {"type": "string"}},
                            "required": ["q"],
                        },
                    },
                ],
                "metadata": {"k": "v"},
            }
        ],
        ("POST", "/v1/agents/{agent_id}"): [
            {"version": 1, "name": "renamed", "system": "s", "metadata": {"k": None}}
        ],
        ("POST", "/v1/environments"): [
            {
                "name": "env",
                "description": "d",
                "config": {
                    "type": "cloud",
                    "networking": {"type": "limited", "allowed_hosts": ["example.com"]},
                    "packages": {"pip": ["x"]},
                },
                "metadata": {"k": "v"},
            }
        ],
        ("POST", "/v1/environments/{environment_id}"): [{"name": "e2", "metadata": {"k": None}}],
        ("POST", "/v1/sessions"): [
            {
                "agent": agent,
                "environment_id": env,
                "title": "t",
                "metadata": {"k": "v"},
                "initial_events": [user_message("hello")],
            },
            {"agent": ref, "environment_id": env},
            {
                "agent": {"type": "agent_with_overrides", "id": agent, "version": 1, "system": "x"},
                "environment_id": env,
                "budget": {
                    "type": "limit",
                    "max_list_cost": {"amount": "2500", "currency": "USD"},
                },
            },
        ],
        ("POST", "/v1/sessions/{session_id}"): [
            {"title": "t", "metadata": {"k": "v"}},
            {"agent": {"tools": []}, "vault_ids": []},
        ],
        ("POST", "/v1/sessions/{session_id}/events"): [
            {"events": [user_message("more")]},
            {"events": [{"type": "user.interrupt"}]},
            {
                "events": [
                    {
                        "type": "user.define_outcome",
                        "description": "d",
                        "rubric": {"type": "text", "content": "r"},
                        "max_iterations": 3,
                    }
                ]
            },
            {
                "events": [
                    {
                        "type": "user.tool_confirmation",
                        "result": "deny",
                        "tool_use_id": event,
                        "deny_message": "no",
                    }
                ]
            },
        ],
        ("POST", "/v1/sessions/{session_id}/fork"): [
            {"event_id": event, "agent": ref, "title": "f", "metadata": {"k": "v"}}
        ],
        ("POST", "/v1/sessions/import"): [
            {
                "environment_id": env,
                "session": {"agent": {"id": agent, "version": 1}, "title": "t", "metadata": {}},
                "events": imported_log(),
            }
        ],
        ("POST", "/v1/sessions/{session_id}/replay"): [
            {"scorers": scorers, "grader_model": "m"},
            {"scorers": [{"type": "python", "callable": "json:dumps"}]},
        ],
        ("POST", "/v1/evals"): [
            {
                "suite": suite,
                "agent_id": agent,
                "versions": [1],
                "concurrency": 2,
                "timeout_s": 30,
                "title": "t",
                "scorers": scorers,
            },
            {"sessions": {"session_ids": [session], "agent_version": 1}, "agent_id": agent},
        ],
        ("POST", "/v1/workspaces"): [{"name": "w"}],
        ("POST", "/v1/api_keys"): [{"workspace_id": DEFAULT_WORKSPACE, "name": "k"}],
    }


def _slots(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value (dict keys and list indices), outermost first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _slots(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _slots(item, (*prefix, index))


def _replaced(value: Any, slot: tuple[Any, ...], new: Any) -> Any:
    """A copy of `value` with the slot set to `new` (or removed, for `_DROP`)."""
    if not slot:
        return new
    head, rest = slot[0], slot[1:]
    if isinstance(value, dict):
        out = dict(value)
        if not rest and new is _DROP:
            del out[head]
        else:
            out[head] = _replaced(value[head], rest, new)
        return out
    out_list = list(value)
    if not rest and new is _DROP:
        del out_list[head]
    else:
        out_list[head] = _replaced(value[head], rest, new)
    return out_list


_DROP = object()


@st.composite
def broken_bodies(draw: st.DrawFn, body: Any) -> Any:
    """`body` with one field replaced by junk, dropped, or an unknown field added."""
    slots = list(_slots(body))
    action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add", "keep"]))
    if action == "keep" or not slots:
        return body
    slot = draw(st.sampled_from(slots))
    if action == "drop":
        return _replaced(body, slot, _DROP)
    if action == "add":
        return {**body, draw(st.text(min_size=1, max_size=10)): draw(junk_values)}
    return _replaced(body, slot, draw(junk_for(_at(body, slot))))


def _at(value: Any, slot: tuple[Any, ...]) -> Any:
    for step in slot:
        value = value[step]
    return value


# -- the check ----------------------------------------------------------------------------


def send(
    http: httpx.Client,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
) -> httpx.Response:
    content = None if body is None else encode_body(body)
    headers = {"content-type": "application/json"} if content is not None else {}
    response = http.request(method, path, content=content, params=query, headers=headers)
    check(response, method, path, content, query)
    return response


def check(
    response: httpx.Response,
    method: str,
    path: str,
    content: bytes | None = None,
    query: list[tuple[str, str]] | None = None,
) -> None:
    """Never a 5xx; a 4xx carries the Anthropic error body."""
    shown = content
    if content is not None and len(content) > 1500:
        shown = content[:900] + b"...(%d bytes)..." % len(content) + content[-300:]
    where = f"{method} {path} query={query!r} body={shown!r}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:500]}"
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(
                f"{where} -> {response.status_code} non-JSON {response.text!r}"
            ) from None
        error = body.get("error") if isinstance(body, dict) else None
        assert (
            isinstance(body, dict)
            and body.get("type") == "error"
            and isinstance(error, dict)
            and isinstance(error.get("type"), str)
            and isinstance(error.get("message"), str)
        ), f"{where} -> {response.status_code} not an Anthropic error body: {response.text[:500]}"


# -- the properties -----------------------------------------------------------------------

_BODY_METHODS = {"POST", "PUT", "PATCH"}


@given(data=st.data())
def test_any_json_at_any_route(http: httpx.Client, world: World, data: st.DataObject) -> None:
    """Arbitrary JSON (or bytes) at every route, with real and junk ids in the path."""
    endpoint = data.draw(st.sampled_from(world.endpoints), label="endpoint")
    values = data.draw(paths(world, endpoint), label="path params")
    body = None
    query = None
    if endpoint.method in _BODY_METHODS:
        body = data.draw(json_values | raw_bodies | deep_values, label="body")
    elif endpoint.method == "GET":
        query = data.draw(st.none() | queries(world), label="query")
    send(http, endpoint.method, build_path(http, world, endpoint, values), body=body, query=query)


@given(data=st.data())
def test_broken_bodies_for_create_endpoints(
    http: httpx.Client, world: World, data: st.DataObject
) -> None:
    """At every endpoint with a template, a valid-looking body with one field replaced by
    junk (huge numbers, deep nesting, meaningful strings), dropped, or an unknown one added;
    on real resources (junk ids are test_any_json_at_any_route's)."""
    known = templates(world)
    for endpoint in world.endpoints:
        bases = known.get((endpoint.method, endpoint.path))
        if not bases or any(name not in world.ids for name in endpoint.params):
            continue
        base = data.draw(st.sampled_from(bases), label=f"base for {endpoint.path}")
        body = data.draw(broken_bodies(base), label="body")
        values = data.draw(real_paths(world, endpoint), label="path params")
        send(http, endpoint.method, build_path(http, world, endpoint, values), body=body)


def real_path(http: httpx.Client, world: World, endpoint: Endpoint) -> str | None:
    """The endpoint's path on the real resources (None when one of its kind is missing)."""
    if any(name not in world.ids for name in endpoint.params):
        return None
    values = {name: ("real", world.main(name)) for name in endpoint.params}
    return build_path(http, world, endpoint, values)


@given(data=st.data())
def test_deeply_nested_bodies(http: httpx.Client, world: World, data: st.DataObject) -> None:
    """JSON thousands of levels deep, alone or in place of a field of a valid body, at every
    route that takes a body (on the real resources)."""
    known = templates(world)
    deep = data.draw(deep_values, label="deep")
    inside = data.draw(st.booleans(), label="inside a field")
    for endpoint in [e for e in world.endpoints if e.method in _BODY_METHODS]:
        path = real_path(http, world, endpoint)
        if path is None:
            continue
        body: Any = deep
        bases = known.get((endpoint.method, endpoint.path), [])
        if inside and bases:
            base = data.draw(st.sampled_from(bases), label=f"base for {endpoint.path}")
            slot = data.draw(st.sampled_from(list(_slots(base))), label="slot")
            body = _replaced(base, slot, deep)
        send(http, endpoint.method, path, body=body)


@given(data=st.data())
def test_junk_query_parameters(http: httpx.Client, world: World, data: st.DataObject) -> None:
    """One set of junk query parameters (limits, orders, versions, timestamps, page cursors)
    at every GET route, on the real resources."""
    query = data.draw(queries(world), label="query")
    for endpoint in [e for e in world.endpoints if e.method == "GET"]:
        path = real_path(http, world, endpoint)
        if path is not None:
            send(http, "GET", path, query=query)


def test_stream_routes_refuse_bad_parameters(http: httpx.Client, world: World) -> None:
    """SSE routes answer bad resume ids, delta kinds and ids with a 4xx, not a stream."""
    other_event = world.event_id
    cases: list[tuple[Endpoint, str, dict[str, str], dict[str, str]]] = []
    for endpoint in world.streams:
        real = {name: world.main(name) for name in endpoint.params if name in world.ids}
        if len(real) != len(endpoint.params):
            continue
        path = endpoint.path
        for name, value in real.items():
            path = path.replace("{" + name + "}", value)
        cases += [
            (endpoint, path, {"after": "garbage"}, {}),
            (endpoint, path, {"after": "1e30"}, {}),
            (endpoint, path, {}, {"last-event-id": "garbage"}),
            (endpoint, path, {"after": cursor([1e30])}, {}),
        ]
        if "session_id" in endpoint.params:
            cases.append((endpoint, path, {"event_deltas[]": "x"}, {}))
        else:
            # An event of another stream is not a resume position here.
            cases.append((endpoint, path, {"after": other_event}, {}))
        junk = _PARAM.sub("nope_00000000000000000000000000", endpoint.path)
        cases.append((endpoint, junk, {}, {}))
    assert cases
    timeout = httpx.Timeout(5.0, read=2.0)
    for endpoint, path, params, headers in cases:
        with http.stream(
            endpoint.method, path, params=params, headers=headers, timeout=timeout
        ) as response:
            assert 400 <= response.status_code < 500, (
                f"{endpoint.method} {path} params={params} headers={headers} -> "
                f"{response.status_code}"
            )
            response.read()
            check(response, endpoint.method, path, None, list(params.items()))
