"""The SSE tail's waits against a real store: clients that come and go leave nothing
behind on the session's shared next-commit future, and a commit still reaches a tail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from sessiond.api.sse import tail
from sessiond.runtime.wire.encoding import to_wire
from sessiond.store.protocol import NewEvent, Record
from sessiond.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

BODY = b'{"type":"user.message","content":[{"type":"text","text":"hi"}]}'


def _record() -> Record:
    return Record(
        kind="session", id="s", workspace_id="w", data=b"{}", created_at="x", updated_at="x"
    )


async def test_departed_tails_leave_no_callbacks_and_a_commit_reaches_a_tail(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "w.db"))
    await store.open()
    try:
        await store.create_stream(_record(), [NewEvent(type="user.message", data=BODY)])
        async with store.watch("s") as keeper:  # keeps the session's channel open
            shared = keeper.next_commit(1)
            assert shared is not None
            for _ in range(30):
                frames = tail(store, "s", after_seq=None, draining=anyio.Event(), to_wire=to_wire)
                waiting = asyncio.ensure_future(frames.__anext__())
                with anyio.fail_after(5):
                    while not shared._callbacks:  # until it waits on the commit
                        await asyncio.sleep(0)
                assert not waiting.done()
                waiting.cancel()  # the client went away
                await asyncio.gather(waiting, return_exceptions=True)
                await frames.aclose()
            assert not shared._callbacks, "departed tails still hang on the future"

            frames = tail(store, "s", after_seq=1, draining=anyio.Event(), to_wire=to_wire)
            waiting = asyncio.ensure_future(frames.__anext__())
            await store.append("s", [NewEvent(type="user.message", data=BODY)], expected_seq=1)
            frame = await asyncio.wait_for(waiting, 5)
            assert b"event: user.message" in frame and frame.count(b"\r\n\r\n") == 1
            await frames.aclose()
    finally:
        await store.close()
