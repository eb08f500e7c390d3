"""The SSE stream through the real SDK: live tail, exact resumption, closing."""

from __future__ import annotations

import threading

import anthropic
import httpx
import pytest
from harness import ADMIN_KEY, RunningServer, make_config, make_session, user_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LOG_SIZE = 12


def _read(stream: object, count: int) -> list[object]:
    iterator = iter(stream)  # type: ignore[call-overload]
    return [next(iterator) for _ in range(count)]


def test_live_tail_sees_only_new_events_including_user_echoes(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    client.beta.sessions.events.send(session.id, events=[user_message("old")])
    with client.beta.sessions.events.stream(session.id, timeout=10) as stream:
        sent = client.beta.sessions.events.send(session.id, events=[user_message("new")])
        (received,) = _read(stream, 1)
    assert sent.data is not None
    assert received.id == sent.data[0].id  # type: ignore[attr-defined]
    assert received.content[0].text == "new"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def recorded(server: RunningServer) -> tuple[str, list[str]]:
    """A session with LOG_SIZE events, shared by the property examples."""
    with anthropic.Anthropic(base_url=server.base_url, api_key=ADMIN_KEY, max_retries=0) as sdk:
        session = make_session(sdk)
        ids = []
        for i in range(LOG_SIZE):
            sent = sdk.beta.sessions.events.send(session.id, events=[user_message(f"m{i}")])
            assert sent.data is not None
            ids.append(sent.data[0].id)
    return session.id, ids


# The SDK client fixture is stateless, so sharing it across examples is fine.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    point=st.integers(min_value=0, max_value=LOG_SIZE - 1), how=st.sampled_from(["after", "header"])
)
def test_resume_yields_exactly_the_events_after_the_point(
    client: anthropic.Anthropic, recorded: tuple[str, list[str]], point: int, how: str
) -> None:
    session_id, ids = recorded
    resume = (
        {"extra_query": {"after": ids[point]}}
        if how == "after"
        else {"extra_headers": {"Last-Event-ID": ids[point]}}
    )
    expected = ids[point + 1 :]
    with client.beta.sessions.events.stream(session_id, timeout=10, **resume) as stream:  # type: ignore[arg-type]
        replayed = _read(stream, len(expected))
        # The seam: the next live event follows the replay with no gap and no duplicate.
        sent = client.beta.sessions.events.send(session_id, events=[user_message("live")])
        (live,) = _read(stream, 1)
    assert [e.id for e in replayed] == expected  # type: ignore[attr-defined]
    assert sent.data is not None and live.id == sent.data[0].id  # type: ignore[attr-defined]
    ids.append(sent.data[0].id)


def test_resume_from_an_unknown_id_is_400(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.stream(session.id, extra_query={"after": "sevt_nope"})


def test_frames_have_event_and_id_lines(server: RunningServer, client: anthropic.Anthropic) -> None:
    session = make_session(client)
    sent = client.beta.sessions.events.send(session.id, events=[user_message("x")])
    assert sent.data is not None
    url = f"{server.base_url}/v1/sessions/{session.id}/events/stream"
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "accept": "application/json"}
    first_id = client.beta.sessions.events.list(session.id).data[0].id
    with httpx.Client(timeout=10) as http:
        with http.stream("GET", url, headers={**headers, "last-event-id": first_id}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            client.beta.sessions.events.send(session.id, events=[user_message("y")])
            lines: list[str] = []
            for line in response.iter_lines():
                lines.append(line)
                if line == "" and any(x.startswith("data:") for x in lines):
                    break
    assert lines[0] == "event: user.message"
    assert lines[1].startswith("id: sevt_")
    assert lines[2].startswith("data: {")


def test_delete_closes_open_streams_with_session_deleted(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    with client.beta.sessions.events.stream(session.id, timeout=10) as stream:
        deleted = client.beta.sessions.delete(session.id)
        events = list(stream)
    assert deleted.type == "session_deleted"
    assert [e.type for e in events] == ["session.deleted"]


def test_server_shutdown_ends_live_streams(tmp_path: object) -> None:
    running = RunningServer(make_config(tmp_path, run_engine=False))  # type: ignore[arg-type]
    running.start()
    try:
        with anthropic.Anthropic(
            base_url=running.base_url, api_key=ADMIN_KEY, max_retries=0
        ) as sdk:
            session = make_session(sdk)
            ended = threading.Event()
            with sdk.beta.sessions.events.stream(session.id, timeout=10) as stream:

                def drain() -> None:
                    list(stream)
                    ended.set()

                reader = threading.Thread(target=drain, daemon=True)
                reader.start()
                running.drain()
                assert ended.wait(10), "stream did not end when the server started draining"
    finally:
        running.stop()


def test_a_live_tail_includes_what_is_sent_right_after_its_headers(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    """The live position is taken before the headers go out: a send that follows them at
    once is never missed, however fast it lands (it once was, under a fast engine)."""
    session = make_session(client)
    headers = {"x-api-key": ADMIN_KEY}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as h:
        for attempt in range(30):
            with h.stream("GET", f"/v1/sessions/{session.id}/events/stream") as stream:  # type: ignore[attr-defined]
                sent = h.post(
                    f"/v1/sessions/{session.id}/events",  # type: ignore[attr-defined]
                    json={"events": [user_message(f"m{attempt}")]},
                ).json()["data"][0]["id"]
                for line in stream.iter_lines():
                    if line.startswith("id: "):
                        assert line == f"id: {sent}", attempt
                        break
