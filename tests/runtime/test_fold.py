"""The session projection: status, usage, timing and outcomes folded from the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from event_strategies import events_of, stored_logs
from hypothesis import given
from hypothesis import strategies as st

from sessiond.runtime.engine.fold import OutcomeEvaluation, SessionState, fold, fold_all
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.usage import (
    CacheCreationUsage,
    MonetaryAmount,
    SessionUsageSnapshot,
    SpanModelUsage,
)
from sessiond.store.clock import format_ts

_T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(SessionState).decode


def at(seconds: float) -> str:
    return format_ts(_T0 + timedelta(seconds=seconds))


def stamp(log: list[tuple[float, ev.SessionEvent]]) -> list[ev.SessionEvent]:
    """Give hand-written events the ids and timestamps the store would."""
    return [
        msgspec.structs.replace(event, id=f"sevt_{i}", processed_at=at(t))
        for i, (t, event) in enumerate(log, start=1)
    ]


def usage(inp: int, out: int, read: int = 0, write: int = 0) -> SpanModelUsage:
    return SpanModelUsage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=write,
    )


RUNNING = ev.SessionStatusRunning()
IDLE = ev.SessionStatusIdle(stop_reason=ev.EndTurn())


# -- examples ------------------------------------------------------------------------------


def test_a_new_session_is_idle_with_zero_usage() -> None:
    state = SessionState()
    assert state.status == "idle" and state.stop_reason is None and state.last_seq == 0
    assert _encode(state.usage) == (
        b'{"active_seconds":0.0,"cache_creation":{"ephemeral_1h_input_tokens":0,'
        b'"ephemeral_5m_input_tokens":0},"cache_read_input_tokens":0,"input_tokens":0,'
        b'"output_tokens":0}'
    )
    assert _encode(state.stats) == b'{"active_seconds":0.0,"duration_seconds":0.0}'


def test_status_follows_session_status_events_and_terminated_is_final() -> None:
    waiting = ev.SessionStatusIdle(stop_reason=ev.RequiresAction(event_ids=["sevt_9"]))
    steps: list[tuple[ev.SessionEvent, str]] = [
        (ev.UserMessage(content=[]), "idle"),
        (RUNNING, "running"),
        (waiting, "idle"),
        (RUNNING, "running"),
        (
            ev.SessionThreadStatusIdle(
                agent_name="a", session_thread_id="t", stop_reason=ev.EndTurn()
            ),
            "running",
        ),
        (ev.SessionStatusRescheduled(), "rescheduling"),
        (RUNNING, "running"),
        (IDLE, "idle"),
        (ev.SessionStatusTerminated(), "terminated"),
        (RUNNING, "terminated"),
        (IDLE, "terminated"),
    ]
    state = SessionState()
    for event, status in steps:
        state = fold(state, event)
        assert state.status == status, event
    assert state.stop_reason == ev.EndTurn()


def test_stop_reason_is_the_last_idles_and_survives_running() -> None:
    waiting = ev.RequiresAction(event_ids=["sevt_9"])
    state = fold_all(SessionState(), [RUNNING, ev.SessionStatusIdle(stop_reason=waiting), RUNNING])
    assert state.status == "running" and state.stop_reason == waiting


def test_active_and_duration_seconds() -> None:
    log = stamp(
        [
            (0, ev.UserMessage(content=[])),
            (1, RUNNING),
            (3, RUNNING),  # a repeated running does not restart the spell
            (6, IDLE),  # 5 s running
            (10, ev.UserMessage(content=[])),
            (10, RUNNING),
            (12.5, ev.AgentThinking()),  # still running: 2.5 s so far
        ]
    )
    state = fold_all(SessionState(created_at=at(-1)), log)
    assert state.stats.active_seconds == 7.5 and state.usage.active_seconds == 7.5
    assert state.stats.duration_seconds == 13.5
    assert state.updated_at == at(12.5) and state.last_event_id == "sevt_7"
    after = fold(state, msgspec.structs.replace(IDLE, id="sevt_8", processed_at=at(14)))
    assert after.stats.active_seconds == 9.0 and after.stats.duration_seconds == 15.0


def test_duration_starts_at_the_first_event_without_a_creation_time() -> None:
    state = fold_all(SessionState(), stamp([(3, RUNNING), (5, IDLE)]))
    assert state.created_at == at(3) and state.stats.duration_seconds == 2.0


def test_a_clock_step_backwards_never_subtracts_time() -> None:
    state = fold_all(SessionState(), stamp([(10, RUNNING), (4, IDLE)]))
    assert state.stats.active_seconds == 0.0 and state.stats.duration_seconds == 0.0


def test_usage_sums_spans_and_a_snapshot_overrides_what_it_carries() -> None:
    log: list[ev.SessionEvent] = [
        ev.SpanModelRequestEnd(model_request_start_id="s1", model_usage=usage(10, 5, 100, 7)),
        ev.SpanModelRequestEnd(model_request_start_id="s2", model_usage=usage(1, 2, 3, 4)),
    ]
    state = fold_all(SessionState(), log)
    assert (state.usage.input_tokens, state.usage.output_tokens) == (11, 7)
    assert state.usage.cache_read_input_tokens == 103
    assert state.usage.cache_creation == CacheCreationUsage(
        ephemeral_1h_input_tokens=0, ephemeral_5m_input_tokens=11
    )

    snapshot = SessionUsageSnapshot(
        input_tokens=50,
        cache_creation=CacheCreationUsage(ephemeral_1h_input_tokens=8, ephemeral_5m_input_tokens=3),
        list_cost=MonetaryAmount(amount="12", currency="USD"),
    )
    state = fold(state, ev.SessionUsage(usage=snapshot))
    assert (state.usage.input_tokens, state.usage.output_tokens) == (50, 7)
    assert state.usage.list_cost is not None and state.usage.list_cost.amount == "12"
    state = fold(state, log[1])
    assert (state.usage.input_tokens, state.usage.output_tokens) == (51, 9)
    assert state.usage.cache_creation == CacheCreationUsage(
        ephemeral_1h_input_tokens=8, ephemeral_5m_input_tokens=7
    )


def test_title_and_metadata_come_from_session_updated() -> None:
    state = SessionState(title="first", metadata={"a": "1"})
    state = fold(state, ev.SessionUpdated(metadata={"b": "2"}))
    assert (state.title, state.metadata) == ("first", {"b": "2"})
    state = fold(state, ev.SessionUpdated(title=None))
    assert (state.title, state.metadata) == (None, {"b": "2"})
    state = fold(state, ev.SessionUpdated(title="second", metadata={}))
    assert (state.title, state.metadata) == ("second", {})


def test_outcome_evaluations_follow_definition_spans_and_verdicts() -> None:
    rubric = ev.TextRubric(content="r")
    log = stamp(
        [
            (0, ev.UserDefineOutcome(description="d", outcome_id="outc_1", rubric=rubric)),
            (1, RUNNING),
            (2, ev.SpanOutcomeEvaluationStart(outcome_id="outc_1", iteration=0)),
            (
                3,
                ev.SpanOutcomeEvaluationEnd(
                    outcome_id="outc_1",
                    outcome_evaluation_start_id="sevt_3",
                    iteration=0,
                    result="needs_revision",
                    explanation="too long",
                    usage=usage(4, 1),
                ),
            ),
            (4, ev.SpanOutcomeEvaluationStart(outcome_id="outc_1", iteration=1)),
            (5, ev.SpanOutcomeEvaluationOngoing(outcome_id="outc_1", iteration=1)),
            (6, ev.SpanOutcomeEvaluationStart(outcome_id="outc_unknown", iteration=0)),
        ]
    )
    expected = [
        OutcomeEvaluation(outcome_id="outc_1", description="d"),
        OutcomeEvaluation(outcome_id="outc_1", description="d", result="running"),
        OutcomeEvaluation(outcome_id="outc_1", description="d", result="evaluating"),
        OutcomeEvaluation(
            outcome_id="outc_1", description="d", result="needs_revision", explanation="too long"
        ),
        OutcomeEvaluation(
            outcome_id="outc_1",
            description="d",
            result="evaluating",
            iteration=1,
            explanation="too long",
        ),
    ]
    state = SessionState()
    for event, outcome in zip(log, expected + [expected[-1]] * 2, strict=True):
        state = fold(state, event)
        assert state.outcome_evaluations == [outcome]
    assert state.usage.input_tokens == 4  # grader usage counts

    done = ev.SpanOutcomeEvaluationEnd(
        outcome_id="outc_1",
        outcome_evaluation_start_id="sevt_5",
        iteration=1,
        result="satisfied",
        explanation="good",
        usage=usage(0, 0),
        processed_at=at(9),
    )
    [final] = fold(state, done).outcome_evaluations
    assert (final.result, final.iteration, final.completed_at) == ("satisfied", 1, at(9))


def test_fold_never_changes_the_state_it_is_given() -> None:
    before = SessionState(metadata={"a": "1"})
    outcome = ev.UserDefineOutcome(
        description="d", outcome_id="o", rubric=ev.FileRubric(file_id="f")
    )
    after = fold_all(before, [outcome, ev.SessionUpdated(metadata={"b": "2"})])
    assert before == SessionState(metadata={"a": "1"})
    assert after.metadata == {"b": "2"} and len(after.outcome_evaluations) == 1


# -- properties ----------------------------------------------------------------------------


@given(log=stored_logs())
def test_any_log_folds_and_counts_every_event(log: list[ev.SessionEvent]) -> None:
    state = fold_all(SessionState(), log)
    assert state.last_seq == len(log)
    if log:
        assert state.updated_at == log[-1].processed_at
        assert state.last_event_id == log[-1].id
        assert state.created_at == log[0].processed_at
    assert state.stats.active_seconds is not None and state.stats.duration_seconds is not None
    assert 0 <= state.stats.active_seconds <= state.stats.duration_seconds
    assert state.usage.active_seconds == state.stats.active_seconds


@given(log=stored_logs())
def test_folding_is_deterministic(log: list[ev.SessionEvent]) -> None:
    assert fold_all(SessionState(), log) == fold_all(SessionState(), log)


@given(log=stored_logs(), data=st.data())
def test_folding_in_pieces_through_the_record_equals_folding_at_once(
    log: list[ev.SessionEvent], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(log)), max_size=4)))
    state = SessionState()
    for start, end in zip([0, *cuts], [*cuts, len(log)], strict=True):
        # Between appends the state lives encoded in the session record.
        state = _decode_state(_encode(fold_all(state, log[start:end])))
    assert state == fold_all(SessionState(), log)


_STATUS_CHOICES: list[ev.SessionEvent] = [
    RUNNING,
    IDLE,
    ev.SessionStatusRescheduled(),
    ev.SessionStatusTerminated(),
    ev.AgentThinking(),
]
_STATUS_EVENTS = st.sampled_from(_STATUS_CHOICES)
_STATUS_OF: dict[type[Any], str] = {
    ev.SessionStatusRunning: "running",
    ev.SessionStatusIdle: "idle",
    ev.SessionStatusRescheduled: "rescheduling",
    ev.SessionStatusTerminated: "terminated",
}


@given(log=stored_logs(_STATUS_EVENTS))
def test_status_is_the_last_status_event_until_terminated(log: list[ev.SessionEvent]) -> None:
    expected = "idle"
    for event in log:
        if expected != "terminated":
            expected = _STATUS_OF.get(type(event), expected)
    assert fold_all(SessionState(), log).status == expected


_SPANS = events_of(ev.SpanModelRequestEnd) | events_of(ev.SpanOutcomeEvaluationEnd)


@given(log=stored_logs(_SPANS))
def test_usage_is_the_sum_of_all_spans(log: list[ev.SessionEvent]) -> None:
    spans = [
        e.model_usage if isinstance(e, ev.SpanModelRequestEnd) else e.usage
        for e in log
        if isinstance(e, ev.SpanModelRequestEnd | ev.SpanOutcomeEvaluationEnd)
    ]
    assert len(spans) == len(log)
    total = fold_all(SessionState(), log).usage
    assert total.input_tokens == sum(u.input_tokens for u in spans)
    assert total.output_tokens == sum(u.output_tokens for u in spans)
    assert total.cache_read_input_tokens == sum(u.cache_read_input_tokens for u in spans)
    assert total.cache_creation is not None
    assert total.cache_creation.ephemeral_5m_input_tokens == sum(
        u.cache_creation_input_tokens for u in spans
    )


@given(log=stored_logs(_STATUS_EVENTS))
def test_active_time_is_the_time_between_running_and_the_next_status_change(
    log: list[ev.SessionEvent],
) -> None:
    def seconds(event: ev.SessionEvent) -> float:
        assert event.processed_at is not None
        return datetime.fromisoformat(event.processed_at).timestamp()

    expected_us = 0
    since: ev.SessionEvent | None = None
    terminated = False
    for event in log:
        if terminated:
            continue
        if isinstance(event, ev.SessionStatusRunning) and since is None:
            since = event
        elif type(event) in _STATUS_OF and not isinstance(event, ev.SessionStatusRunning):
            if since is not None:
                expected_us += round((seconds(event) - seconds(since)) * 1_000_000)
            since = None
            terminated = isinstance(event, ev.SessionStatusTerminated)
    if since is not None:
        expected_us += round((seconds(log[-1]) - seconds(since)) * 1_000_000)
    assert fold_all(SessionState(), log).stats.active_seconds == expected_us / 1_000_000
