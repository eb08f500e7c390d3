"""Hypothesis: the real store against a plain-list model of the log.

Hypothesis has no async state machines (HypothesisWorks/hypothesis#4107), so the store
runs on an event loop in another thread and the rules call into it through an anyio
blocking portal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio.from_thread
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pg_harness import drop_schema, new_schema, postgres_dsn

from sessiond.store.errors import ConflictError
from sessiond.store.protocol import EventQuery, NewEvent, Record, Store
from sessiond.store.sqlite import SQLiteStore
from sessiond.store.tail import TailCache

STREAMS = ["s1", "s2", "s3"]


def _record(session_id: str) -> Record:
    return Record(
        kind="session",
        id=session_id,
        workspace_id="w",
        data=b"{}",
        created_at="2026-01-01T00:00:00.000000Z",
        updated_at="x",
    )


class StoreMachine(RuleBasedStateMachine):
    """Appends (right and wrong seqs, idempotency keys) and reads, checked against lists."""

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = str(Path(self.dir.name) / "p.db")
        self.store = self.make()
        self.portal.call(self.store.open)
        self.model: dict[str, list[bytes]] = {s: [] for s in STREAMS}
        self.keys: dict[tuple[str, str], list[bytes]] = {}
        self.last_position = 0

    def make(self) -> Store:
        """A store on this machine's database (reopened by `reopen`)."""
        # A tiny tail cache, so that reads run into its edges and evictions.
        return SQLiteStore(self.path, tail=TailCache(per_stream=3, total_bytes=5 * 300))

    def cleanup(self) -> None:
        """Remove the database."""
        self.dir.cleanup()

    @initialize()
    def create(self) -> None:
        for stream in STREAMS:
            self.portal.call(self.store.create_stream, _record(stream))

    @rule(
        stream=st.sampled_from(STREAMS),
        bodies=st.lists(st.binary(max_size=20), min_size=1, max_size=4),
        skew=st.sampled_from([0, 0, 0, -1, 1]),
    )
    def append(self, stream: str, bodies: list[bytes], skew: int) -> None:
        expected = len(self.model[stream]) + skew
        new = [NewEvent(type="x", data=b'{"b":"' + b.hex().encode() + b'"}') for b in bodies]
        try:
            result = self.portal.call(lambda: self.store.append(stream, new, expected_seq=expected))
        except ConflictError:
            assert skew != 0
            return
        assert skew == 0
        self.model[stream].extend(e.data for e in new)
        assert [e.seq for e in result.events] == list(
            range(len(self.model[stream]) - len(new) + 1, len(self.model[stream]) + 1)
        )
        for event in result.events:
            assert event.position > self.last_position
            self.last_position = event.position

    @rule(
        stream=st.sampled_from(STREAMS),
        key=st.sampled_from(["a", "b", "c"]),
        body=st.binary(max_size=10),
    )
    def append_idempotent(self, stream: str, key: str, body: bytes) -> None:
        new = [NewEvent(type="x", data=b'{"k":"' + body.hex().encode() + b'"}')]
        result = self.portal.call(
            lambda: self.store.append(stream, new, expected_seq=None, idempotency_key=key)
        )
        if (stream, key) in self.keys:
            assert result.replayed
            assert [e.data for e in result.events] == self.keys[(stream, key)]
        else:
            assert not result.replayed
            self.keys[(stream, key)] = [e.data for e in new]
            self.model[stream].extend(e.data for e in new)

    @precondition(lambda self: any(self.model.values()))
    @rule(stream=st.sampled_from(STREAMS), data=st.data())
    def read_after(self, stream: str, data: st.DataObject) -> None:
        n = data.draw(st.integers(min_value=0, max_value=len(self.model[stream])))
        limit = data.draw(st.none() | st.integers(min_value=1, max_value=4))
        query = EventQuery(after_seq=n, limit=limit)
        events = self.portal.call(lambda: self.store.read(stream, query))
        end = len(self.model[stream]) if limit is None else min(n + limit, len(self.model[stream]))
        assert [e.data for e in events] == self.model[stream][n:end]
        assert [e.seq for e in events] == list(range(n + 1, end + 1))
        assert self.portal.call(self.store.last_seq, stream) == len(self.model[stream])

    @rule(stream=st.sampled_from(STREAMS))
    def delete_and_create_again(self, stream: str) -> None:
        self.portal.call(self.store.delete_stream, stream)
        self.portal.call(self.store.create_stream, _record(stream))
        self.model[stream] = []
        self.keys = {k: v for k, v in self.keys.items() if k[0] != stream}

    @rule()
    def reopen(self) -> None:
        """A new store on the same file: its reads start from the database alone."""
        self.portal.call(self.store.close)
        self.store = self.make()
        self.portal.call(self.store.open)

    @invariant()
    def whole_logs_match(self) -> None:
        for stream in STREAMS:
            events = self.portal.call(self.store.read, stream)
            assert [e.data for e in events] == self.model[stream]

    def teardown(self) -> None:
        self.portal.call(self.store.close)
        self.cleanup()
        self._portal_cm.__exit__(None, None, None)


class PostgresStoreMachine(StoreMachine):
    """The same rules on PostgreSQL, a fresh schema per example."""

    def __init__(self) -> None:
        self.dsn, self.schema = postgres_dsn(), new_schema()  # skips before anything is made
        super().__init__()

    def make(self) -> Store:
        from sessiond.store.postgres import PostgresStore

        return PostgresStore(self.dsn, schema=self.schema)

    def cleanup(self) -> None:
        self.portal.call(drop_schema, self.dsn, self.schema)
        self.dir.cleanup()


StoreMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestStoreMachine = StoreMachine.TestCase
PostgresStoreMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None
)
TestPostgresStoreMachine = PostgresStoreMachine.TestCase
