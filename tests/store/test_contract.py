"""The store contract, run against every backend."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from functools import partial

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessiond.store.errors import ConflictError, InvalidInputError, NotFoundError
from sessiond.store.protocol import (
    EventQuery,
    Fence,
    NewEvent,
    Record,
    RecordQuery,
    Store,
    StoredEvent,
    Version,
)

pytestmark = pytest.mark.anyio

PAYLOAD = b'{"type":"user.message","text":"' + b"x" * 360 + b'"}'


def session_record(session_id: str, workspace: str = "w", **tags: str) -> Record:
    return Record(
        kind="session",
        id=session_id,
        workspace_id=workspace,
        data=b'{"n":0}',
        created_at="2026-01-01T00:00:00.000000Z",
        updated_at="2026-01-01T00:00:00.000000Z",
        tags=tags,
    )


def events(n: int, kind: str = "user.message") -> list[NewEvent]:
    return [NewEvent(type=kind, data=PAYLOAD) for _ in range(n)]


def count_projector(record: Record, stored: list) -> Record:  # type: ignore[type-arg]
    """Counts events into the record, so atomicity with the append is checkable."""
    n = msgspec.json.decode(record.data)["n"] + len(stored)
    return msgspec.structs.replace(record, data=msgspec.json.encode({"n": n}))


async def test_seq_is_contiguous_from_one_and_positions_increase(store: Store) -> None:
    await store.create_stream(session_record("a"))
    await store.create_stream(session_record("b"), events(2))
    await store.append("a", events(3), expected_seq=0)
    await store.append("b", events(1), expected_seq=2)
    await store.append("a", events(2), expected_seq=None)
    a = await store.read("a")
    b = await store.read("b")
    assert [e.seq for e in a] == [1, 2, 3, 4, 5]
    assert [e.seq for e in b] == [1, 2, 3]
    positions = sorted(e.position for e in a + b)
    assert len(set(positions)) == 8
    assert [e.position for e in a] == sorted(e.position for e in a)
    assert all(e.id.startswith("sevt_") for e in a + b)
    assert len({e.id for e in a + b}) == 8
    assert await store.last_seq("a") == 5


async def test_read_after_and_filters(store: Store) -> None:
    await store.create_stream(session_record("s"))
    await store.append("s", events(3) + events(2, "agent.message"), expected_seq=0)
    everything = await store.read("s")
    for n in range(6):
        assert await store.read("s", EventQuery(after_seq=n)) == everything[n:]
    typed = await store.read("s", EventQuery(types=frozenset({"agent.message"})))
    assert [e.seq for e in typed] == [4, 5]
    desc = await store.read("s", EventQuery(descending=True, limit=2))
    assert [e.seq for e in desc] == [5, 4]
    before = await store.read("s", EventQuery(before_seq=3, descending=True))
    assert [e.seq for e in before] == [2, 1]
    ts = everything[0].recorded_at
    assert await store.read("s", EventQuery(recorded_gt=ts)) == []
    assert await store.read("s", EventQuery(recorded_gte=ts)) == everything
    assert await store.get_event(everything[2].id) == everything[2]
    with pytest.raises(NotFoundError):
        await store.get_event("sevt_missing")


async def test_expected_seq_mismatch_writes_nothing(store: Store) -> None:
    await store.create_stream(session_record("s"), events(1))
    with pytest.raises(ConflictError) as caught:
        await store.append("s", events(2), expected_seq=0)
    assert caught.value.code == "seq_conflict"
    assert len(await store.read("s")) == 1
    with pytest.raises(NotFoundError):
        await store.append("nope", events(1), expected_seq=None)


async def test_concurrent_appends_at_the_same_seq_exactly_one_wins(store: Store) -> None:
    await store.create_stream(session_record("s"))
    outcomes: list[str] = []

    async def contender() -> None:
        try:
            await store.append("s", events(2), expected_seq=0)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(contender)
    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 19
    assert [e.seq for e in await store.read("s")] == [1, 2]


async def test_idempotent_retry_returns_the_first_result(store: Store) -> None:
    await store.create_stream(session_record("s"))
    first = await store.append("s", events(2), expected_seq=0, idempotency_key="k1")
    again = await store.append("s", events(2), expected_seq=0, idempotency_key="k1")
    assert again.replayed and not first.replayed
    assert again.events == first.events
    assert len(await store.read("s")) == 2
    other = await store.append("s", events(1), expected_seq=2, idempotency_key="k2")
    assert other.last_seq == 3


async def test_projector_is_atomic_with_the_append(store: Store) -> None:
    made = await store.create_stream(session_record("s"), events(2), project=count_projector)
    assert made.record is not None and msgspec.json.decode(made.record.data)["n"] == 2
    result = await store.append("s", events(3), expected_seq=2, project=count_projector)
    assert result.record is not None and msgspec.json.decode(result.record.data)["n"] == 5
    assert msgspec.json.decode((await store.get_record("session", "s")).data)["n"] == 5

    def broken(record: Record, stored: list) -> Record:  # type: ignore[type-arg]
        raise ValueError("projector failed")

    with pytest.raises(ValueError, match="projector failed"):
        await store.append("s", events(1), expected_seq=None, project=broken)
    assert len(await store.read("s")) == 5
    assert msgspec.json.decode((await store.get_record("session", "s")).data)["n"] == 5


async def test_a_failing_append_does_not_sink_its_batch(store: Store) -> None:
    for i in range(50):
        await store.create_stream(session_record(f"s{i}"))
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        try:
            # Every fifth append expects the wrong seq.
            await store.append(f"s{i}", events(1), expected_seq=7 if i % 5 == 0 else 0)
            results[i] = "ok"
        except ConflictError:
            results[i] = "conflict"

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
    for i in range(50):
        assert results[i] == ("conflict" if i % 5 == 0 else "ok")
        assert len(await store.read(f"s{i}")) == (0 if i % 5 == 0 else 1)


async def test_watch_wakes_on_append_and_raises_after_delete(store: Store) -> None:
    await store.create_stream(session_record("s"))
    async with store.watch("s") as watch:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                got: list[int] = []

                async def waiter() -> None:
                    got.append(await watch.wait(0))

                tg.start_soon(waiter)
                await store.append("s", events(2), expected_seq=0)
        assert got == [2]
        assert await watch.wait(1) == 2  # already beyond: returns at once
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                failures: list[str] = []

                async def deleted_waiter() -> None:
                    try:
                        await watch.wait(2)
                    except NotFoundError as exc:
                        failures.append(exc.code)

                tg.start_soon(deleted_waiter)
                await store.delete_stream("s")
        assert failures == ["session_deleted"]
    with pytest.raises(NotFoundError):
        await store.get_record("session", "s")
    assert await store.read("s") == []


async def test_a_tailing_reader_never_sees_a_gap_fill_in(store: Store) -> None:
    await store.create_stream(session_record("s"))
    seen: list[int] = []

    async def tail() -> None:
        cursor = 0
        async with store.watch("s") as watch:
            while cursor < 200:
                batch = await store.read("s", EventQuery(after_seq=cursor))
                for event in batch:
                    assert event.seq == cursor + 1
                    cursor = event.seq
                    seen.append(cursor)
                if cursor < 200:
                    await watch.wait(cursor)

    async def writer() -> None:
        for _ in range(100):
            await store.append("s", events(2), expected_seq=None)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            tg.start_soon(writer)
    assert seen == list(range(1, 201))


async def test_records_revisions_versions_and_listing(store: Store) -> None:
    base = Record(
        kind="agent",
        id="agent_1",
        workspace_id="w",
        data=b"1",
        created_at="2026-01-01T00:00:01.000000Z",
        updated_at="x",
    )
    saved = await store.save_record(
        base, version=Version(kind="agent", id="agent_1", version=1, data=b"1", created_at="x")
    )
    assert saved.revision == 1
    with pytest.raises(ConflictError) as exists:
        await store.save_record(base)
    assert exists.value.code == "record_exists"
    updated = await store.save_record(
        msgspec.structs.replace(saved, data=b"2"),
        version=Version(kind="agent", id="agent_1", version=2, data=b"2", created_at="x"),
    )
    assert updated.revision == 2
    with pytest.raises(ConflictError) as stale:
        await store.save_record(msgspec.structs.replace(saved, data=b"3"))
    assert stale.value.code == "revision_conflict"
    with pytest.raises(ConflictError) as dup:
        await store.save_record(
            msgspec.structs.replace(updated, data=b"3"),
            version=Version(kind="agent", id="agent_1", version=2, data=b"3", created_at="x"),
        )
    assert dup.value.code == "version_exists"
    assert (await store.get_record("agent", "agent_1")).data == b"2"
    assert [v.version for v in await store.list_versions("agent", "agent_1")] == [1, 2]
    assert (await store.get_version("agent", "agent_1", 1)).data == b"1"
    with pytest.raises(NotFoundError):
        await store.get_version("agent", "agent_1", 9)
    await store.delete_record("agent", "agent_1")
    with pytest.raises(NotFoundError):
        await store.get_record("agent", "agent_1")
    assert await store.list_versions("agent", "agent_1") == []


async def test_list_records_filters_and_pages_both_ways(store: Store) -> None:
    for i in range(7):
        await store.save_record(
            Record(
                kind="session",
                id=f"s{i}",
                workspace_id="w" if i < 6 else "other",
                data=b"{}",
                created_at=f"2026-01-01T00:00:0{i}.000000Z",
                updated_at="x",
                archived_at="y" if i == 5 else None,
                tags={"status": "idle" if i % 2 else "running"},
            )
        )

    async def walk(descending: bool, **kw: object) -> list[str]:
        out: list[str] = []
        after = None
        while True:
            page = await store.list_records(
                RecordQuery(
                    kind="session",
                    workspace_id="w",
                    descending=descending,
                    after=after,
                    limit=2,
                    **kw,
                )  # type: ignore[arg-type]
            )
            out += [r.id for r in page]
            if len(page) < 2:
                return out
            after = (page[-1].created_at, page[-1].id)

    assert await walk(False) == ["s0", "s1", "s2", "s3", "s4"]
    assert await walk(True) == ["s4", "s3", "s2", "s1", "s0"]
    assert await walk(False, include_archived=True) == ["s0", "s1", "s2", "s3", "s4", "s5"]
    assert await walk(False, tags={"status": frozenset({"idle"})}) == ["s1", "s3"]
    assert await walk(False, created_gte="2026-01-01T00:00:03.000000Z") == ["s3", "s4"]
    everywhere = await store.list_records(
        RecordQuery(kind="session", workspace_id=None, limit=50, include_archived=True)
    )
    assert len(everywhere) == 7


async def test_acknowledged_appends_survive_close_and_reopen(
    make_store: Callable[[], Store],
) -> None:
    store = make_store()
    await store.open()
    await store.create_stream(session_record("s"))
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(lambda: store.append("s", events(1), expected_seq=None))
    last = (await store.read("s"))[-1]
    await store.close()
    reopened = make_store()
    await reopened.open()
    try:
        assert [e.seq for e in await reopened.read("s")] == list(range(1, 51))
        more = await reopened.append("s", events(1), expected_seq=50)
        assert more.events[0].position > last.position
    finally:
        await reopened.close()


async def test_watchers_do_not_leak(store: Store) -> None:
    await store.create_stream(session_record("s"))
    for _ in range(10):
        async with store.watch("s"):
            pass
    assert store.watched_streams() == 0  # type: ignore[attr-defined]


async def test_a_read_started_after_an_append_returned_sees_it_under_concurrent_reads(
    store: Store,
) -> None:
    """Read-your-writes while other reads are in flight on the same connections.

    A pooled reader that ran a statement's execute and its fetches as separate steps let
    reads interleave on one connection; a statement left mid-way kept the connection's
    read transaction (its snapshot) open, so a later read missed a committed append and
    the engine left the input unanswered (found by bench/engine_turn.py at 50 sessions).
    """
    await store.create_stream(session_record("big"), events(300))
    sessions = [f"s{i}" for i in range(20)]
    for session_id in sessions:
        await store.create_stream(session_record(session_id))
    missed: list[tuple[str, int, int]] = []
    done = anyio.Event()

    async def background_reads() -> None:
        while not done.is_set():
            await store.read("big")

    async def append_then_read(session_id: str) -> None:
        for _ in range(15):
            result = await store.append(session_id, events(1), expected_seq=None)
            seen = len(await store.read(session_id))
            if seen < result.last_seq:
                missed.append((session_id, result.last_seq, seen))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(background_reads)
        async with anyio.create_task_group() as writers:
            for session_id in sessions:
                writers.start_soon(append_then_read, session_id)
        done.set()
    assert missed == []


async def test_an_append_failing_half_way_writes_nothing_and_spares_its_batch(
    store: Store,
) -> None:
    """The second of two events has a taken id, so the append fails after its first row
    went in; appends committed in the same batch must survive, and the failed one leave
    no trace (its first row included)."""
    await store.create_stream(session_record("a"))
    await store.create_stream(session_record("b"))
    taken = (await store.append("a", events(1), expected_seq=None)).events[0].id
    outcomes: dict[str, object] = {}

    async def attempt(name: str, session_id: str, new: list[NewEvent]) -> None:
        try:
            outcomes[name] = await store.append(session_id, new, expected_seq=None)
        except ConflictError as exc:
            outcomes[name] = exc

    bad = [
        NewEvent(type="x", data=PAYLOAD, id="sevt_fresh_one"),
        NewEvent(type="x", data=PAYLOAD, id=taken),
    ]
    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, "before", "b", events(2))
        tg.start_soon(attempt, "bad", "b", bad)
        tg.start_soon(attempt, "after", "a", events(1))
    assert isinstance(outcomes["bad"], ConflictError)
    assert outcomes["bad"].code == "event_id_exists"
    assert [e.seq for e in await store.read("b")] == [1, 2]
    assert [e.seq for e in await store.read("a")] == [1, 2]
    with pytest.raises(NotFoundError):
        await store.get_event("sevt_fresh_one")
    again = await store.append("b", events(1), expected_seq=2)
    assert again.last_seq == 3


async def test_a_stream_deleted_and_created_again_starts_over(store: Store) -> None:
    """The writer keeps each stream's last seq in memory: a delete and a re-create under
    the same id, in one batch or in separate ones, must not inherit the old position."""
    await store.create_stream(session_record("a"), events(3))
    await store.append("a", events(2), expected_seq=3)
    # Queued in this order (each enqueues before its first await): one batch, most likely.
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(store.append, "a", events(1), expected_seq=5))
        tg.start_soon(store.delete_stream, "a")
        tg.start_soon(store.create_stream, session_record("a"), events(1))
    result = await store.append("a", events(1), expected_seq=1)
    assert result.last_seq == 2
    assert [e.seq for e in await store.read("a")] == [1, 2]
    assert await store.last_seq("a") == 2
    await store.delete_stream("a")
    with pytest.raises(NotFoundError):
        await store.append("a", events(1), expected_seq=None)
    await store.create_stream(session_record("a"))
    assert (await store.append("a", events(2), expected_seq=0)).last_seq == 2


async def test_next_commit_is_one_shared_future_per_commit(store: Store) -> None:
    await store.create_stream(session_record("a"), events(1))
    async with store.watch("a") as first, store.watch("a") as second:
        one, two = first.next_commit(5), second.next_commit(5)
        assert one is not None and one is two, "watchers of a stream share one future"
        assert not one.done()
        await store.append("a", events(1), expected_seq=None)
        await asyncio.wait_for(asyncio.shield(one), 5)
        following = first.next_commit(5)
        assert following is not None and following is not one and not following.done()
        assert first.next_commit(1) is None  # the stream is at 2 now
        await store.delete_stream("a")
        await asyncio.wait_for(asyncio.shield(following), 5)
        with pytest.raises(NotFoundError):
            first.next_commit(5)


async def test_a_record_read_after_a_write_is_the_written_one(store: Store) -> None:
    """Reads between writes of every kind (reads may be served from memory)."""

    def n_of(record: Record) -> int:
        return int(msgspec.json.decode(record.data)["n"])

    await store.create_stream(session_record("s"))
    assert n_of(await store.get_record("session", "s")) == 0
    await store.append("s", events(2), expected_seq=None, project=count_projector)
    assert n_of(await store.get_record("session", "s")) == 2
    current = await store.get_record("session", "s")
    saved = await store.save_record(msgspec.structs.replace(current, data=b'{"n":40}'))
    assert await store.get_record("session", "s") == saved
    await store.append("s", events(1), expected_seq=None, project=count_projector)
    assert n_of(await store.get_record("session", "s")) == 41
    await store.delete_stream("s")
    with pytest.raises(NotFoundError):
        await store.get_record("session", "s")
    await store.create_stream(session_record("s"))
    assert n_of(await store.get_record("session", "s")) == 0
    agent = Record(
        kind="agent", id="a", workspace_id="w", data=b"1", created_at="x", updated_at="x"
    )
    await store.save_record(agent)
    assert (await store.get_record("agent", "a")).data == b"1"
    await store.delete_record("agent", "a")
    with pytest.raises(NotFoundError):
        await store.get_record("agent", "a")


async def test_a_read_racing_a_write_never_outlives_it(store: Store) -> None:
    """Reads started before, during and after concurrent updates: once an update has
    returned, no later read returns an older revision."""
    base = Record(kind="agent", id="a", workspace_id="w", data=b"0", created_at="x", updated_at="x")
    record = await store.save_record(base)
    stop = anyio.Event()
    seen_after: list[tuple[int, int]] = []
    committed = [record.revision]

    async def reader() -> None:
        while not stop.is_set():
            floor = committed[-1]
            got = await store.get_record("agent", "a")
            seen_after.append((floor, got.revision))
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(reader)
        for i in range(1, 30):
            record = await store.save_record(msgspec.structs.replace(record, data=str(i).encode()))
            committed.append(record.revision)
            await anyio.sleep(0)
        stop.set()
    assert seen_after and all(got >= floor for floor, got in seen_after)
    assert (await store.get_record("agent", "a")).revision == committed[-1]


async def test_a_cancelled_commit_future_does_not_stop_delivery(store: Store) -> None:
    """A caller that cancels the shared next-commit future (against its contract) must
    not leave the writes of the batch that resolves it undelivered."""
    await store.create_stream(session_record("a"))
    async with store.watch("a") as watch:
        future = watch.next_commit(5)
        assert future is not None
        future.cancel()
        result = await asyncio.wait_for(store.append("a", events(1), expected_seq=None), 5)
        assert result.last_seq == 1
        await asyncio.wait_for(watch.wait(0), 5)


def due_projector(record: Record, stored: list) -> Record:  # type: ignore[type-arg]
    """Due while the last event is a `user.message`: the projector keeps the flag."""
    return msgspec.structs.replace(record, due=stored[-1].type == "user.message")


async def test_due_records_are_listed_by_the_flag_the_projector_keeps(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.create_stream(session_record(name))
    await store.append("a", events(1), expected_seq=0, project=due_projector)
    await store.append("b", events(1), expected_seq=0, project=due_projector)
    await store.append("b", events(1, "agent.message"), expected_seq=1, project=due_projector)
    due = await store.list_records(RecordQuery(kind="session", workspace_id=None, due=True))
    assert [r.id for r in due] == ["a"]
    assert (await store.get_record("session", "a")).due is True
    not_due = await store.list_records(RecordQuery(kind="session", workspace_id=None, due=False))
    assert sorted(r.id for r in not_due) == ["b", "c"]
    # A record saved outside an append keeps (or sets) the flag as given.
    c = await store.get_record("session", "c")
    await store.save_record(msgspec.structs.replace(c, due=True))
    due = await store.list_records(RecordQuery(kind="session", workspace_id=None, due=True))
    assert sorted(r.id for r in due) == ["a", "c"]


async def test_a_lease_has_one_holder_and_its_token_grows_with_each_new_one(
    store: Store,
) -> None:
    first = await store.acquire_lease("session:s", "worker-a", ttl_s=30)
    assert first is not None and first.owner == "worker-a"
    assert await store.acquire_lease("session:s", "worker-b", ttl_s=30) is None
    again = await store.acquire_lease("session:s", "worker-a", ttl_s=30)
    assert again is not None and again.token == first.token, "its holder keeps its token"
    renewed = await store.renew_lease(first, ttl_s=30)
    assert renewed is not None and renewed.expires_at >= first.expires_at
    await store.release_lease(first)
    taken = await store.acquire_lease("session:s", "worker-b", ttl_s=30)
    assert taken is not None and taken.token > first.token
    assert await store.renew_lease(first, ttl_s=30) is None, "a lost lease cannot be renewed"
    await store.release_lease(first)  # a no-op: it is not a's any more
    assert await store.acquire_lease("session:s", "worker-c", ttl_s=30) is None


async def test_an_expired_lease_goes_to_the_next_taker(store: Store) -> None:
    first = await store.acquire_lease("work:w", "a", ttl_s=0.05)
    assert first is not None
    with anyio.fail_after(5):
        while (taken := await store.acquire_lease("work:w", "b", ttl_s=30)) is None:
            await anyio.sleep(0.02)  # waiting out the store's clock: there is no event
    assert taken.token == first.token + 1


async def test_an_append_with_a_stale_fence_writes_nothing(store: Store) -> None:
    await store.create_stream(session_record("s"))
    lease = await store.acquire_lease("session:s", "a", ttl_s=30)
    assert lease is not None
    fence = Fence(lease.name, lease.token)
    await store.append("s", events(1), expected_seq=0, fence=fence)
    await store.release_lease(lease)
    newer = await store.acquire_lease("session:s", "b", ttl_s=30)
    assert newer is not None
    with pytest.raises(ConflictError) as refused:
        await store.append("s", events(1), expected_seq=None, fence=fence)
    assert refused.value.code == "fenced"
    with pytest.raises(ConflictError):
        await store.append("s", events(1), expected_seq=None, fence=Fence("session:none", 1))
    await store.append("s", events(1), expected_seq=1, fence=Fence(newer.name, newer.token))
    assert [e.seq for e in await store.read("s")] == [1, 2]


async def test_due_is_published_for_appends_without_a_fence(store: Store) -> None:
    heard: list[str] = []
    got = anyio.Event()

    def on_due(payload: str) -> None:
        heard.append(payload)
        got.set()

    unsubscribe = store.subscribe("due", on_due)
    try:
        await store.create_stream(session_record("s"))
        lease = await store.acquire_lease("session:s", "a", ttl_s=30)
        assert lease is not None
        fence = Fence(lease.name, lease.token)
        await store.append("s", events(1), expected_seq=None, project=due_projector, fence=fence)
        await store.append("s", events(1), expected_seq=None, project=due_projector)
        with anyio.fail_after(5):
            await got.wait()
        assert heard == ["s"]
        await store.publish("custom", "hello")
    finally:
        unsubscribe()


async def test_an_imported_stream_keeps_ids_seqs_bodies_and_times_with_new_positions(
    store: Store,
) -> None:
    await store.create_stream(session_record("earlier"), events(2))
    earlier = await store.read("earlier")
    exported = [
        StoredEvent(
            session_id="s",
            seq=seq,
            position=1000 + seq,  # the exporting store's: not kept
            id=f"sevt_exported{seq}",
            type=kind,
            data=b'{"type": "%s",  "n": %d}' % (kind.encode(), seq),  # any bytes: not re-encoded
            recorded_at=f"2020-01-0{seq}T00:00:00.00000{seq}Z",
        )
        for seq, kind in ((1, "user.message"), (2, "agent.message"), (3, "session.status_idle"))
    ]
    record = msgspec.structs.replace(
        session_record("s", status="idle"),
        updated_at="2020-01-03T00:00:00.000003Z",
        archived_at="2020-02-01T00:00:00.000000Z",
        due=True,
        revision=7,  # the exporting store's: the row starts over
    )
    due: list[str] = []
    heard = anyio.Event()

    def on_due(payload: str) -> None:
        due.append(payload)
        heard.set()

    unsubscribe = store.subscribe("due", on_due)
    try:
        async with store.watch("s") as watch:
            await store.import_stream(record, exported)
            with anyio.fail_after(5):
                assert await watch.wait(0) == 3
                await heard.wait()
    finally:
        unsubscribe()
    assert due == ["s"]
    got = await store.read("s")
    assert [(e.session_id, e.seq, e.id, e.type, e.data, e.recorded_at) for e in got] == [
        (e.session_id, e.seq, e.id, e.type, e.data, e.recorded_at) for e in exported
    ]
    positions = [e.position for e in got]
    assert positions == sorted(positions) and positions[0] > earlier[-1].position
    assert await store.last_seq("s") == 3
    assert await store.get_event("sevt_exported2") == got[1]
    assert await store.get_record("session", "s") == msgspec.structs.replace(record, revision=1)
    listed = await store.list_records(
        RecordQuery(kind="session", workspace_id="w", include_archived=True, due=True)
    )
    assert [r.id for r in listed] == ["s"]
    # It carries on like any stream: appends follow it, in seq and in position.
    appended = await store.append("s", events(1), expected_seq=3)
    assert appended.events[0].seq == 4 and appended.events[0].position > positions[-1]
    later = await store.append("earlier", events(1), expected_seq=2)
    assert later.events[0].position > appended.events[0].position


async def test_an_import_of_taken_ids_or_broken_seqs_writes_nothing(store: Store) -> None:
    await store.create_stream(session_record("s"), events(2))
    taken = await store.read("s")

    def exported(session_id: str, seqs: list[int], ids: list[str]) -> list[StoredEvent]:
        return [
            StoredEvent(
                session_id=session_id,
                seq=seq,
                position=0,
                id=event_id,
                type="user.message",
                data=PAYLOAD,
                recorded_at="2020-01-01T00:00:00.000000Z",
            )
            for seq, event_id in zip(seqs, ids, strict=True)
        ]

    with pytest.raises(ConflictError) as stream:
        await store.import_stream(session_record("s"), exported("s", [1], ["sevt_new"]))
    assert stream.value.code == "stream_exists"
    with pytest.raises(ConflictError) as event:
        await store.import_stream(
            session_record("t"), exported("t", [1, 2], ["sevt_fresh", taken[1].id])
        )
    assert event.value.code == "event_id_exists"
    for seqs, ids, session_id in (
        ([2], ["sevt_a"], "t"),  # not from 1
        ([1, 3], ["sevt_a", "sevt_b"], "t"),  # a gap
        ([1], ["sevt_a"], "u"),  # another stream's event
    ):
        with pytest.raises(InvalidInputError):
            await store.import_stream(session_record("t"), exported(session_id, seqs, ids))
    with pytest.raises(NotFoundError):
        await store.last_seq("t")
    with pytest.raises(NotFoundError):
        await store.get_record("session", "t")
    with pytest.raises(NotFoundError):
        await store.get_event("sevt_fresh")
    assert await store.read("s") == taken
    await store.import_stream(session_record("t"), [])  # an empty stream is a stream
    assert await store.last_seq("t") == 0


# -- blobs ------------------------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200_000))
async def test_a_blob_reads_back_byte_for_byte_under_its_sha256(store: Store, data: bytes) -> None:
    digest = await store.put_blob(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert await store.get_blob(digest) == data
    assert await store.put_blob(data) == digest  # idempotent


async def test_a_deleted_blob_is_gone_and_bad_digests_are_refused(store: Store) -> None:
    digest = await store.put_blob(b"short-lived")
    await store.delete_blob(digest)
    with pytest.raises(NotFoundError) as missing:
        await store.get_blob(digest)
    assert missing.value.code == "blob_not_found"
    await store.delete_blob(digest)  # a no-op
    for bad in ("../../etc/passwd", "ab", "Z" * 64):
        with pytest.raises(InvalidInputError):
            await store.get_blob(bad)
