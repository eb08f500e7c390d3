"""Which sessions run, in one process: exactly one drive per session at a time.

Each drive is a child task of the supervisor's task group, started with `tg.start` so a
failure before it is running reaches the caller. Each keeps a CancelScope that a
`user.interrupt` cancels; the engine then writes its closing events, shielded.

A wake that arrives while a session's drive is running is remembered and makes the drive
plan again before it ends, so input sent mid-turn is taken up by the next turn. Between
the drive's last check and its removal there is no await, so no wake can fall between.
Two wakes at once start one drive: the session is marked active before the first awaits.

Nothing depends on a wake arriving. The projection marks a session *due* (`Record.due`,
runtime/resources/sessions.py) while a turn is in flight or client input waits that no step took
up, and due sessions are found through an index of the due rows alone: on start, every
due session is driven (those a crash left running are first marked
`session.status_rescheduled`), and every `sweep_s` the supervisor drives due sessions
that no drive holds, so input whose wake was lost (a crash between the commit and the
wake, a request cancelled in between) is answered all the same.

**Several processes (PostgreSQL).** With an `owner` name, a drive first takes the
session's lease (`session:<id>`); while another process holds it, the drive does not
start. The lease is renewed every third of its time to live, and every append of the
drive carries its fencing token, so a worker that lost it (paused past its lease, cut
off) can write nothing more: the store refuses it. A session found `running` at the start
of a drive had a holder that died: it is marked `session.status_rescheduled` and resumed
from its log. Other processes learn of input through the store's `due` notifications
(an interrupt for a drive running here cancels it from there too), and the sweep takes
over what a dead worker left once its lease has expired. Without an owner (SQLite, one
process), there are no leases: the process is the only writer.

A drive that fails (a bug, not a model error: the engine handles those) is retried with
backoff, each failure logged as a `session.error` that says it is retrying; after
`DRIVE_ATTEMPTS` the session goes idle with `retries_exhausted`, which the planner treats
as the end of the turn, so a failing step is never planned again in a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
from anyio.abc import TaskGroup, TaskStatus

from sessiond.runtime.engine.loop import Engine
from sessiond.runtime.resources.sessions import KIND, project_session
from sessiond.runtime.wire import events as ev
from sessiond.runtime.wire.encoding import encode_body
from sessiond.runtime.wire.error_objects import (
    RetryStatusExhausted,
    RetryStatusRetrying,
    UnknownErrorObject,
)
from sessiond.store.errors import ConflictError, NotFoundError
from sessiond.store.protocol import EventQuery, Fence, Lease, NewEvent, Record, RecordQuery, Store

log = logging.getLogger("sessiond.supervisor")

CLOSE_DEADLINE_S = 5.0
DRIVE_ATTEMPTS = 3
DRIVE_BACKOFF_S = 0.5
"""The first retry's delay; each one after doubles it."""
_PAGE = 200


class Supervisor:
    """Runs session drives as children of one task group."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        *,
        sweep_s: float = 5.0,
        owner: str | None = None,
        lease_ttl_s: float = 15.0,
        drives: int = 256,
    ) -> None:
        self._store = store
        self._engine = engine
        self._sweep_s = sweep_s
        self._owner = owner
        self._lease_ttl_s = lease_ttl_s
        self._drives = anyio.CapacityLimiter(drives)
        self._stopping = False
        self._drive_started: dict[str, int] = {}  # session -> last seq when its drive began
        self._settled: dict[str, int] = {}  # due sessions with nothing to do, by revision
        self._tg: TaskGroup | None = None
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._scopes: dict[str, anyio.CancelScope] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the task group until cancelled; resume crashed sessions first."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            unsubscribe = (
                self._store.subscribe("due", self._on_due) if self._owner is not None else None
            )
            try:
                await self._recover()
                task_status.started()
                while True:
                    await anyio.sleep(self._sweep_s)
                    await self._sweep_logged()
            finally:
                if unsubscribe is not None:
                    unsubscribe()

    async def _sweep_logged(self) -> None:
        if self._stopping:
            return
        try:
            await self.sweep()
        except Exception:
            log.exception("recovery sweep failed; trying again in %s s", self._sweep_s)

    def _on_due(self, session_id: str) -> None:
        """The store says a session became due (in any process); "" means: sweep now."""
        if self._tg is None or self._stopping:
            return
        if not session_id:
            self._tg.start_soon(self._sweep_logged)
        elif session_id in self._active:
            self._again.add(session_id)
            self._tg.start_soon(self._cancel_if_interrupted, session_id)
        else:
            self._tg.start_soon(self.wake, session_id)

    async def _cancel_if_interrupted(self, session_id: str) -> None:
        """An interrupt sent to another process, for a drive running here."""
        since = self._drive_started.get(session_id)
        scope = self._scopes.get(session_id)
        if since is None or scope is None:
            return
        try:
            new = await self._store.read(session_id, EventQuery(after_seq=since))
        except NotFoundError:
            return
        if any(s.type == ev.UserInterrupt.__struct_config__.tag for s in new):
            scope.cancel()

    async def stop(self, deadline_s: float) -> None:
        """Take no new sessions, and give running drives `deadline_s` to finish; what is
        left is cancelled by the caller (its leases are given back as drives end)."""
        self._stopping = True
        with anyio.move_on_after(deadline_s):
            while self._active:
                await anyio.sleep(0.05)

    def running(self, session_id: str) -> bool:
        """Whether a drive for this session is in progress."""
        return session_id in self._active

    async def notify(self, session_id: str, events: Sequence[ev.EventBase]) -> None:
        """New client events were appended: interrupt if asked, then plan again."""
        if any(isinstance(e, ev.UserInterrupt) for e in events):
            scope = self._scopes.get(session_id)
            if scope is not None:
                scope.cancel()
        await self.wake(session_id)

    async def wake(self, session_id: str) -> None:
        """Make sure the session's log gets planned (again)."""
        if session_id in self._active:
            self._again.add(session_id)
            return
        if self._tg is None:
            raise RuntimeError("the supervisor is not running")
        if self._stopping:
            return
        self._active.add(session_id)
        try:
            await self._tg.start(self._drive, session_id)
        except BaseException:
            self._active.discard(session_id)
            raise

    async def _drive(self, session_id: str, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            async with self._drives:
                if self._owner is None:
                    await self._drive_loop(session_id)
                    return
                lease = await self._store.acquire_lease(
                    f"session:{session_id}", self._owner, self._lease_ttl_s
                )
                if lease is None:
                    return  # another process drives it
                try:
                    await self._drive_leased(session_id, lease)
                finally:
                    with anyio.move_on_after(CLOSE_DEADLINE_S, shield=True):
                        await self._store.release_lease(lease)
        except NotFoundError:
            pass  # deleted meanwhile
        except Exception:
            # Nothing one session meets (a database blip, a lost lease) may take down the
            # task group every other drive runs in; the session stays due, and the sweep
            # comes back to it.
            log.exception("session %s: drive stopped", session_id)
        finally:
            self._scopes.pop(session_id, None)
            self._drive_started.pop(session_id, None)
            self._active.discard(session_id)
            if session_id in self._again and self._tg is not None and not self._stopping:
                # A wake that came after the loop's last look (while the lease was being
                # given back): it must not wait for the sweep.
                self._again.discard(session_id)
                self._tg.start_soon(self.wake, session_id)

    async def _drive_leased(self, session_id: str, lease: Lease) -> None:
        """Drive while holding the lease: renewed in the background, fencing every append;
        if it is lost, the drive is cut short (its appends would be refused anyway)."""
        self._engine.hold(session_id, Fence(lease.name, lease.token))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep, lease, tg.cancel_scope)
                try:
                    await self._resume_orphan(session_id)
                    await self._drive_loop(session_id)
                except ConflictError as exc:
                    if exc.code != "fenced":
                        raise
                    # Another worker holds the session now: stop at once (driving on would
                    # only be refused, or run its tool calls a second time).
                    log.warning("session %s: another worker holds it now; stopping", session_id)
                tg.cancel_scope.cancel()
        finally:
            self._engine.release(session_id)

    async def _keep(self, lease: Lease, scope: anyio.CancelScope) -> None:
        """Renew every third of the time to live; a renewal that fails (the database
        unreachable) is tried again until the lease would have expired."""
        given_up_at = anyio.current_time() + self._lease_ttl_s
        while True:
            await anyio.sleep(self._lease_ttl_s / 3)
            try:
                renewed = await self._store.renew_lease(lease, self._lease_ttl_s)
            except Exception as exc:
                if anyio.current_time() < given_up_at:
                    log.warning("could not renew %s (%s); trying again", lease.name, exc)
                    continue
                renewed = None
            if renewed is None:
                log.warning("lost the lease %s; stopping its drive", lease.name)
                scope.cancel()
                return
            lease = renewed
            given_up_at = anyio.current_time() + self._lease_ttl_s

    async def _resume_orphan(self, session_id: str) -> None:
        """A session running with no live holder: its worker died mid-turn."""
        record = await self._store.get_record(KIND, session_id)
        if record.tags.get("status") == "running":
            await self._engine.append_fenced(session_id, [ev.SessionStatusRescheduled()])
            log.info("session %s: rescheduled (its worker is gone)", session_id)

    async def _drive_loop(self, session_id: str) -> None:
        while True:
            self._again.discard(session_id)
            # The seq first, then the scope: an interrupt already dealt with (before this
            # seq) must not cancel the drive about to start.
            self._drive_started[session_id] = await self._store.last_seq(session_id)
            with anyio.CancelScope() as scope:
                self._scopes[session_id] = scope
                await self._drive_once(session_id)
            self._scopes.pop(session_id, None)
            if scope.cancelled_caught:
                # Only an interrupt cancels this scope; a shutdown (or a lost lease)
                # cancels a scope above it and lands nowhere near here.
                with anyio.move_on_after(CLOSE_DEADLINE_S, shield=True):
                    await self._engine.close_interrupted(session_id)
            # Read the log first, then look at `_again`: a wake that lands during the read
            # must still be seen (checked the other way round, it was lost).
            pending = await self._pending(session_id)
            if not pending and session_id not in self._again:
                return

    async def _pending(self, session_id: str) -> bool:
        """Whether the log, read again now, still asks for a step (a backstop: input that
        landed as a drive ended must never be left unanswered)."""
        try:
            return await self._engine.has_work(session_id)
        except Exception:
            return False

    async def _drive_once(self, session_id: str) -> None:
        for attempt in range(1, DRIVE_ATTEMPTS + 1):
            try:
                await self._engine.drive(session_id)
                return
            except NotFoundError:
                return  # deleted while it ran
            except ConflictError as exc:
                if exc.code == "fenced":
                    raise  # the lease is gone: see _drive_leased
                failure: Exception = exc
            except Exception as exc:
                failure = exc
            # A bug, not a provider failure (those are handled in the engine): record it in
            # the log so the session does not look stuck, and keep the server up.
            log.exception(
                "session %s: drive failed (attempt %d)", session_id, attempt, exc_info=failure
            )
            retrying = attempt < DRIVE_ATTEMPTS
            await self._record_failure(session_id, failure, retrying)
            if not retrying:
                return
            await anyio.sleep(DRIVE_BACKOFF_S * 2 ** (attempt - 1))

    async def _record_failure(self, session_id: str, exc: Exception, retrying: bool) -> None:
        """A `session.error` for a failed drive. While retrying, a model request it left
        open stays open (the next attempt issues it again, as after a crash); the last
        failure ends the turn: open requests end as errors, idle `retries_exhausted`."""
        status = RetryStatusRetrying() if retrying else RetryStatusExhausted()
        message = f"internal error: {type(exc).__name__}"
        error = ev.SessionError(error=UnknownErrorObject(message=message, retry_status=status))
        try:
            if retrying:
                await self._engine.append_fenced(session_id, [error])
            else:
                await self._engine.close_turn(
                    session_id, stop_reason=ev.RetriesExhausted(), error=error, even_if_idle=True
                )
        except Exception:
            log.exception("session %s: could not record the failure", session_id)

    async def _due(self) -> list[Record]:
        """Every session the projection marks due (a page at a time, by index)."""
        found: list[Record] = []
        after: tuple[str, str] | None = None
        while True:
            query = RecordQuery(
                kind=KIND,
                workspace_id=None,
                due=True,
                include_archived=True,
                after=after,
                limit=_PAGE,
            )
            records = await self._store.list_records(query)
            found.extend(records)
            if len(records) < _PAGE:
                return found
            after = (records[-1].created_at, records[-1].id)

    async def sweep(self) -> int:
        """Drive every due session that no drive holds and that has a step to take;
        returns how many were woken.

        A session can be due with nothing to do: a message sent while it waits on a tool
        confirmation is input no step takes up until the confirmation comes. Such a
        session is looked at once per record revision, not on every sweep.
        """
        woken = 0
        settled: dict[str, int] = {}
        due = await self._due()
        held: set[str] = set()
        if self._owner is not None and due:
            # Sessions another live worker drives are not lost: leave them be (a read,
            # where trying each lease would be a write per session per sweep).
            held = await self._store.held_leases([f"session:{r.id}" for r in due])
        for record in due:
            if record.id in self._active or f"session:{record.id}" in held:
                continue
            if self._settled.get(record.id) == record.revision:
                settled[record.id] = record.revision
                continue
            try:
                work = await self._engine.has_work(record.id)
            except NotFoundError:
                continue
            except Exception:
                # One session that cannot be planned must not keep the others from a drive.
                log.exception("session %s: could not be planned by the sweep", record.id)
                continue
            if not work:
                settled[record.id] = record.revision
                continue
            log.warning(
                "session %s: owed a step with no drive (a lost wake); driving it", record.id
            )
            await self.wake(record.id)
            woken += 1
        self._settled = settled
        return woken

    async def _recover(self) -> None:
        """On start: drive every due session, marking those a crash left running (with
        several processes, a drive does that itself once it holds the lease)."""
        if self._owner is not None:
            await self._sweep_logged()
            return
        for record in await self._due():
            if record.tags.get("status") in ("running", "rescheduling"):
                rescheduled = ev.SessionStatusRescheduled()
                await self._store.append(
                    record.id,
                    [NewEvent(type=rescheduled.type, data=encode_body(rescheduled))],
                    expected_seq=None,
                    project=project_session,
                )
                log.info("session %s: rescheduled after a restart", record.id)
            else:
                log.info("session %s: input waiting since before the restart", record.id)
            await self.wake(record.id)
