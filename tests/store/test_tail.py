"""The tail cache against a plain model of committed streams (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sessiond.store.protocol import StoredEvent
from sessiond.store.tail import TailCache

STREAMS = ["a", "b", "c"]

# An op: (stream, n events to commit, body size), n == 0 meaning "delete the stream".
ops = st.lists(
    st.tuples(st.sampled_from(STREAMS), st.integers(0, 5), st.integers(0, 3000)),
    max_size=60,
)


def _event(stream: str, seq: int, size: int) -> StoredEvent:
    return StoredEvent(
        session_id=stream,
        seq=seq,
        position=0,
        id=f"{stream}{seq}",
        type="x",
        data=b"{" + b"x" * size + b"}",
        recorded_at="t",
    )


@settings(max_examples=200, deadline=None)
@given(ops=ops, per_stream=st.integers(1, 8), budget=st.integers(0, 20_000))
def test_answers_are_exact_or_absent_and_memory_stays_in_budget(
    ops: list[tuple[str, int, int]], per_stream: int, budget: int
) -> None:
    cache = TailCache(per_stream=per_stream, total_bytes=budget)
    model: dict[str, list[StoredEvent]] = {s: [] for s in STREAMS}
    for stream, n, size in ops:
        if n == 0:
            model[stream] = []
            cache.committed(stream, [], -1)
        else:
            start = len(model[stream]) + 1
            new = [_event(stream, seq, size) for seq in range(start, start + n)]
            model[stream] += new
            cache.committed(stream, new, new[-1].seq)
        assert cache.size <= budget
        for name, log in model.items():
            held = cache.last_seq(name)
            assert held is None or held == len(log)
            for after in range(len(log) + 1):
                for limit in (None, 1, 2):
                    got = cache.after(name, after, limit)
                    end = len(log) if limit is None else min(len(log), after + limit)
                    assert got is None or got == log[after:end]


def test_a_stream_is_kept_while_it_fits() -> None:
    cache = TailCache(per_stream=4, total_bytes=10_000)
    events = [_event("a", seq, 100) for seq in range(1, 7)]
    cache.committed("a", events, 6)
    assert cache.after("a", 2, None) == events[2:]  # the last 4
    assert cache.after("a", 1, None) is None  # seq 2 was let go
    cache.committed("b", [_event("b", 1, 20_000)], 1)  # alone over budget: not kept
    assert cache.after("b", 0, None) is None
    assert cache.after("a", 5, None) == [events[5]]
