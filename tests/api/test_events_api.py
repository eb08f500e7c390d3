"""Sending and listing session events through the real SDK over loopback HTTP."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from harness import ADMIN_KEY, RunningServer, make_session, user_message


def _all_events(client: anthropic.Anthropic, session_id: str) -> list[object]:
    return list(client.beta.sessions.events.list(session_id, limit=1000))


def test_send_echoes_with_ids_and_lists_in_order(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    sent = client.beta.sessions.events.send(
        session.id, events=[user_message("one"), user_message("two")]
    )
    assert sent.data is not None and [e.type for e in sent.data] == ["user.message"] * 2
    assert all(e.id.startswith("sevt_") and e.processed_at is not None for e in sent.data)
    listed = _all_events(client, session.id)
    assert [e.id for e in listed] == [e.id for e in sent.data]
    assert [e.content[0].text for e in listed] == ["one", "two"]  # type: ignore[attr-defined]


def test_pagination_walks_every_event_once_in_both_orders(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    for i in range(7):
        client.beta.sessions.events.send(session.id, events=[user_message(str(i))])
    first = client.beta.sessions.events.list(session.id, limit=3)
    assert first.next_page is not None and len(first.data) == 3
    ascending = [e.content[0].text for e in client.beta.sessions.events.list(session.id, limit=3)]  # type: ignore[attr-defined]
    assert ascending == [str(i) for i in range(7)]
    descending = [
        e.content[0].text  # type: ignore[attr-defined]
        for e in client.beta.sessions.events.list(session.id, limit=2, order="desc")
    ]
    assert descending == [str(i) for i in reversed(range(7))]
    last_page = client.beta.sessions.events.list(session.id, limit=7)
    assert last_page.next_page is None


def test_types_filter_and_limit_1000(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    client.beta.sessions.events.send(session.id, events=[user_message("a")])
    client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    only = list(client.beta.sessions.events.list(session.id, types=["user.interrupt"], limit=1000))
    assert [e.type for e in only] == ["user.interrupt"]
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.list(session.id, types=["no.such_type"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "bad_events",
    [
        [{"type": "agent.message", "content": [{"type": "text", "text": "x"}]}],
        [{"type": "session.status_idle", "stop_reason": {"type": "end_turn"}}],
        [{"type": "user.message", "content": [{"type": "text", "text": "x"}], "typo": 1}],
        [{"type": "user.message"}],
        [user_message("fine"), {"type": "nope"}],
        [],
    ],
)
def test_invalid_sends_are_400_and_write_nothing(
    client: anthropic.Anthropic, bad_events: list[dict[str, object]]
) -> None:
    session = make_session(client)
    client.beta.sessions.events.send(session.id, events=[user_message("before")])
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.events.send(session.id, events=bad_events)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(_all_events(client, session.id)) == 1


def test_malformed_json_and_oversized_bodies(
    server: RunningServer, client: anthropic.Anthropic
) -> None:
    session = make_session(client)
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    url = f"{server.base_url}/v1/sessions/{session.id}/events"
    with httpx.Client() as http:
        bad = http.post(url, content=b'{"events": [', headers=headers)
        assert bad.status_code == 400
        assert bad.json()["type"] == "error"
        assert bad.json()["error"]["type"] == "invalid_request_error"
        huge = (
            b'{"events":[{"type":"user.message","content":[{"type":"text","text":"'
            + b"x" * 300_000
            + b'"}]}]}'
        )
        too_large = http.post(url, content=huge, headers=headers)
        assert too_large.status_code == 413
    assert _all_events(client, session.id) == []


def test_unknown_session_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.send("sesn_missing", events=[user_message("x")])
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.list("sesn_missing")


def test_system_message_must_follow_a_user_message(client: anthropic.Anthropic) -> None:
    session = make_session(client)
    system = {"type": "system.message", "content": [{"type": "text", "text": "be brief"}]}
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[system])  # type: ignore[list-item]
    ok = client.beta.sessions.events.send(session.id, events=[user_message("hi"), system])  # type: ignore[list-item]
    assert ok.data is not None and [e.type for e in ok.data] == ["user.message", "system.message"]
