"""Moving sessions: one exported session (the `SessionExport` Struct), and whole
installations carried between the SQLite and PostgreSQL backends as JSON lines."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from engine_harness import collect_until_idle
from eval_harness import eval_server, http, sdk, toolset_agent, wait_run
from harness import RunningServer, user_message
from pg_harness import drop_schema, new_schema, postgres_dsn

from sessiond.evals.replay import replay_exported
from sessiond.runtime.resources.transfer import (
    FORMAT_VERSION,
    KINDS,
    STREAM_KINDS,
    SessionExport,
    export_installation,
    import_installation,
)
from sessiond.store.errors import ConflictError, InvalidInputError, NotFoundError
from sessiond.store.protocol import Record, RecordQuery, Store, StoredEvent, Version
from sessiond.store.sqlite import SQLiteStore

SUITE = {"cases": [{"id": "greet", "input": "hello"}, {"id": "sum", "input": "calc 2+3"}]}


class Installation(msgspec.Struct, kw_only=True):
    """A SQLite installation a real server wrote, and what its API served before it stopped."""

    path: Path
    chat: str
    """A session with two finished turns (one ran a tool)."""
    sessions: list[str]
    served: dict[str, Any]
    """Per session id: the session object and its events, as the API served them."""


def _wait_idle(h: httpx.Client, session_id: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = h.get(f"/v1/sessions/{session_id}/events", params={"limit": 1000}).json()
        status = h.get(f"/v1/sessions/{session_id}").json()["status"]
        if status == "idle" and events["data"][-1]["type"] == "session.status_idle":
            return
        time.sleep(0.02)
    raise AssertionError(f"session {session_id} did not go idle")


def _build(server: RunningServer) -> tuple[str, list[str]]:
    """Every kind of record, through the API: agents with versions, environments (one
    archived), sessions (finished, waiting on a custom tool, archived, forked, imported),
    an eval run and its sessions, a second workspace, API keys (one revoked)."""
    with sdk(server) as client, http(server) as h:
        agent = toolset_agent(client)
        client.beta.agents.update(agent.id, version=agent.version, system="be very brief")
        env = client.beta.environments.create(name="env")
        unused = client.beta.environments.create(name="unused")
        client.beta.environments.archive(unused.id)
        chat = client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="chat")
        collect_until_idle(client, chat.id, [user_message("hello")])
        collect_until_idle(client, chat.id, [user_message("calc 2+3")])
        waiting = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        collect_until_idle(client, waiting.id, [user_message("ask lookup")])
        archived = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        collect_until_idle(client, archived.id, [user_message("bye")])
        client.beta.sessions.archive(archived.id)
        fork = h.post(f"/v1/sessions/{chat.id}/fork", json={"title": "forked"}).json()
        _wait_idle(h, fork["id"])
        exported = h.get(f"/v1/sessions/{chat.id}/export").content
        body = msgspec.json.decode(exported, type=dict[str, Any]) | {"environment_id": env.id}
        imported = h.post("/v1/sessions/import", json=body)
        assert imported.status_code == 200, imported.text
        run = h.post("/v1/evals", json={"suite": SUITE, "agent_id": agent.id}).json()
        assert wait_run(h, run["id"])["status"] == "completed"
        workspace = h.post("/v1/workspaces", json={"name": "other"}).json()
        h.post("/v1/api_keys", json={"workspace_id": workspace["id"], "name": "kept"})
        revoked = h.post("/v1/api_keys", json={"workspace_id": workspace["id"]}).json()
        h.post(f"/v1/api_keys/{revoked['id']}/revoke")
        sessions = h.get("/v1/sessions", params={"limit": 100, "include_archived": "true"}).json()[
            "data"
        ]
    return chat.id, [s["id"] for s in sessions]


def _served(server: RunningServer, sessions: list[str]) -> dict[str, Any]:
    with http(server) as h:
        return {
            s: {
                "session": h.get(f"/v1/sessions/{s}").json(),
                "events": h.get(f"/v1/sessions/{s}/events", params={"limit": 1000}).json(),
            }
            for s in sessions
        }


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    root = tmp_path_factory.mktemp("source")
    with eval_server(root) as (server, _script):
        chat, sessions = _build(server)
        served = _served(server, sessions)
    return Installation(
        path=root / "data" / "sessiond.db", chat=chat, sessions=sessions, served=served
    )


@asynccontextmanager
async def _sqlite(path: Path) -> AsyncIterator[Store]:
    store = SQLiteStore(str(path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _postgres() -> AsyncIterator[Store]:
    dsn = postgres_dsn()
    schema = new_schema()
    from sessiond.store.postgres import PostgresStore

    store = PostgresStore(dsn, schema=schema)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(dsn, schema)


async def _export(store: Store, session_ids: list[str] | None = None) -> list[bytes]:
    lines: list[bytes] = []
    written = await export_installation(store, lines.append, session_ids=session_ids)
    assert written == len(lines)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    return lines


async def _contents(store: Store) -> dict[str, Any]:
    """Everything the protocol reads back, positions and revisions aside (positions are
    checked to run in seq order)."""
    records: list[Record] = []
    versions: list[Version] = []
    streams: dict[str, list[StoredEvent]] = {}
    for kind in KINDS:
        query = RecordQuery(kind=kind, workspace_id=None, include_archived=True, limit=10_000)
        for record in await store.list_records(query):
            records.append(msgspec.structs.replace(record, revision=0))
            versions += await store.list_versions(kind, record.id, limit=10_000)
            try:
                await store.last_seq(record.id)
            except NotFoundError:
                continue
            events = await store.read(record.id)
            positions = [e.position for e in events]
            assert positions == sorted(set(positions))
            streams[record.id] = [msgspec.structs.replace(e, position=0) for e in events]
    return {"records": records, "versions": versions, "streams": streams}


@pytest.mark.anyio
async def test_an_installation_goes_from_sqlite_to_postgres_and_back_unchanged(
    installation: Installation, tmp_path: Path
) -> None:
    async with _sqlite(installation.path) as source:
        original = await _export(source)
        contents = await _contents(source)
    header = msgspec.json.decode(original[0])
    assert header["type"] == "header" and header["version"] == FORMAT_VERSION
    assert {msgspec.json.decode(line)["type"] for line in original[1:]} == {
        "record",
        "version",
        "stream",
    }
    async with _postgres() as postgres:
        counts = await import_installation(postgres, original)
        assert counts.records == len(contents["records"])
        assert counts.versions == len(contents["versions"])
        assert counts.streams == len(contents["streams"])
        assert counts.events == sum(len(s) for s in contents["streams"].values())
        assert await _contents(postgres) == contents
        from_postgres = await _export(postgres)
    # Byte for byte, bodies and all, but for the header's time.
    assert from_postgres[1:] == original[1:]
    target = tmp_path / "data" / "sessiond.db"

    async def lines() -> AsyncIterator[bytes]:
        for line in from_postgres:
            yield line

    async with _sqlite(target) as back:
        await import_installation(back, lines())
        assert await _contents(back) == contents
        assert (await _export(back))[1:] == original[1:]
    # A server on the copy serves what the original served.
    with eval_server(tmp_path) as (server, _script):
        assert _served(server, installation.sessions) == installation.served


def test_the_record_kinds_are_every_kind_a_server_writes(installation: Installation) -> None:
    """The protocol cannot list kinds: a kind missing from KINDS would not be exported."""
    with closing(sqlite3.connect(installation.path)) as conn:
        written = {row[0] for row in conn.execute("SELECT DISTINCT kind FROM records")}
        with_streams = {row[0] for row in conn.execute("SELECT DISTINCT record_kind FROM streams")}
    assert written == set(KINDS)
    assert with_streams == STREAM_KINDS


@pytest.mark.anyio
async def test_importing_into_a_store_holding_the_ids_refuses_and_writes_nothing(
    installation: Installation, tmp_path: Path
) -> None:
    async with _sqlite(installation.path) as source:
        lines = await _export(source)
    async with _postgres() as target:
        await import_installation(target, lines)
        before = await _contents(target)
        with pytest.raises(ConflictError) as refused:
            await import_installation(target, lines)
        assert refused.value.code == "record_exists"
        assert "line 2 (workspace 'wrkspc_default')" in refused.value.message
        assert await _contents(target) == before
    async with _sqlite(tmp_path / "partly.db") as partly:
        chat = next(
            line
            for line in lines
            if msgspec.json.decode(line).get("record", {}).get("id") == installation.chat
        )
        await import_installation(partly, [lines[0], chat])
        with pytest.raises(ConflictError) as taken:
            await import_installation(partly, lines)
        assert taken.value.code == "stream_exists"


@pytest.mark.anyio
async def test_an_export_of_some_sessions_holds_them_and_what_they_name(
    installation: Installation, tmp_path: Path
) -> None:
    async with _sqlite(installation.path) as source:
        lines = await _export(source, [installation.chat])
        chat = await source.get_record("session", installation.chat)
        chat_events = await source.read(installation.chat)
    decoded = [msgspec.json.decode(line) for line in lines[1:]]
    kinds = [(d["type"], (d.get("record") or d)["kind"]) for d in decoded]
    assert kinds == [
        ("record", "workspace"),
        ("record", "agent"),
        ("version", "agent"),
        ("version", "agent"),
        ("record", "environment"),
        ("stream", "session"),
    ]
    assert decoded[-1]["record"]["id"] == installation.chat
    written: list[bytes] = []

    async def write(line: bytes) -> None:  # an awaitable writer, as a file's would be
        written.append(line)

    async with _sqlite(tmp_path / "some.db") as target:
        counts = await import_installation(target, lines)
        assert (counts.records, counts.versions, counts.streams) == (4, 2, 1)
        copied = await target.get_record("session", installation.chat)
        assert copied == msgspec.structs.replace(chat, revision=1)
        assert [(e.id, e.data, e.recorded_at) for e in await target.read(installation.chat)] == [
            (e.id, e.data, e.recorded_at) for e in chat_events
        ]
        await export_installation(target, write)
    assert written[1:] == lines[1:]
    with pytest.raises(NotFoundError):
        async with _sqlite(installation.path) as source:
            await _export(source, ["sesn_unknown"])


@pytest.mark.anyio
async def test_an_import_refuses_what_is_not_an_export(tmp_path: Path) -> None:
    record = (
        b'{"type":"record","record":{"kind":"agent","id":"a","workspace_id":"w",'
        b'"created_at":"t","updated_at":"t","archived_at":null,"due":false,"tags":{},'
        b'"data":{}}}'
    )
    cases = [
        ([], "no header"),
        ([record], "starts with its header"),
        ([b'{"type":"header","version":99,"exported_at":"t"}'], "format version 99"),
        ([b'{"type":"header","version":1,"exported_at":"t"}', b"{"], "line 2"),
        (
            [b'{"type":"header","version":1,"exported_at":"t"}', record[:-2] + b',"x":1}}'],
            "unknown field",
        ),
    ]
    async with _sqlite(tmp_path / "empty.db") as store:
        for lines, words in cases:
            with pytest.raises(InvalidInputError, match=words):
                await import_installation(store, lines)


def test_an_exported_session_is_what_the_import_takes_and_the_replay_replays(
    tmp_path: Path,
) -> None:
    with eval_server(tmp_path) as (server, _script), sdk(server) as client, http(server) as h:
        agent = toolset_agent(client)
        env = client.beta.environments.create(name="env")
        session = client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="t")
        collect_until_idle(client, session.id, [user_message("calc 1+1")])
        raw = h.get(f"/v1/sessions/{session.id}/export").content
        exported = msgspec.json.decode(raw, type=SessionExport)
        assert msgspec.json.encode(exported) == raw
        assert exported.initial is not None and exported.initial.title == "t"
        served = h.get(f"/v1/sessions/{session.id}/events", params={"limit": 100}).json()
        assert [msgspec.json.decode(e) for e in exported.events] == served["data"]
        result = anyio.run(replay_exported, exported)
        assert result.projection_matches, result.mismatches
        # The import body is the export plus where to put it.
        body = raw[:-1] + b',"environment_id":"%s"}' % env.id.encode()
        imported = h.post(
            "/v1/sessions/import", content=body, headers={"content-type": "application/json"}
        )
        assert imported.status_code == 200, imported.text
        copy = imported.json()
        assert copy["id"] != session.id and copy["title"] == "t"
        again = msgspec.json.decode(
            h.get(f"/v1/sessions/{copy['id']}/export").content, type=SessionExport
        )
        assert [msgspec.json.decode(e)["type"] for e in again.events] == [
            msgspec.json.decode(e)["type"] for e in exported.events
        ]
        bad = h.post(
            "/v1/sessions/import",
            json={"environment_id": env.id, "session": {"title": 5}, "events": []},
        )
        assert bad.status_code == 400 and "session: " in bad.json()["error"]["message"]
