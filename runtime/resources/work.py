"""Self-hosted environments: the work queue their workers poll (§2.7 of the contract).

A session on a `self_hosted` environment needs a runtime when it is created and whenever
its toolset calls wait for results with no live work item to run them: then a work item
is queued. A worker polls the environment's queue with its environment key, gets the
item and a `secret` whose `sessions_token` is scoped to that one session and item, acks
it, and keeps a lease on it with heartbeats while it runs the session's tool calls and
posts `user.tool_result` events. The lease is the store's own (`work:<id>`), the same
mechanism the engine's workers hold sessions with; its expiry is judged by the
database's clock. An item whose lease lapsed (its worker died or hung) is delivered again
to the next poll, with a new sessions token: the old one stops working at once, and the
session refuses a result for a call already answered, so no call is answered twice.

States: `queued` (waiting; "pending" once polled and not yet acked, delivered again
after `reclaim_older_than_ms`), `starting` (acked), `active` (heartbeating), `stopping`
(a stop was asked of an active item: its next heartbeat says so), `stopped`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from typing import Any, Literal

import anyio
import msgspec

from sessiond.runtime.engine.executor import Report
from sessiond.runtime.resources.agent_config import patch_metadata
from sessiond.runtime.resources.environments import KIND as ENVIRONMENT_KIND
from sessiond.runtime.resources.environments import EnvironmentService, SelfHostedConfig
from sessiond.runtime.resources.workspaces import REVOKED_TOPIC
from sessiond.runtime.tools.toolset import ToolOutcome
from sessiond.store.clock import new_id, now_ts
from sessiond.store.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
    UnavailableError,
)
from sessiond.store.protocol import Record, RecordQuery, Store

log = logging.getLogger("sessiond.work")

KIND = "work"
TOKEN_KIND = "sessions_token"
WORKER_KIND = "work_worker"
TOPIC = "work"
"""Notification topic: an environment id whose queue got an item."""
NO_HEARTBEAT = "NO_HEARTBEAT"
DEFAULT_TTL_S = 300
MIN_TTL_S = 2
MAX_TTL_S = 3600
DEFAULT_RECLAIM_MS = 5000
WORKERS_WINDOW_S = 30.0
LIVE = frozenset({"queued", "starting", "active"})
_RETRIES = 20

WorkState = Literal["queued", "starting", "active", "stopping", "stopped"]


class SessionWorkData(msgspec.Struct, kw_only=True):
    """What the item is for: a session."""

    id: str
    type: Literal["session"] = "session"


class Work(msgspec.Struct, kw_only=True, omit_defaults=False):
    """The wire `work` object."""

    id: str
    environment_id: str
    data: SessionWorkData
    state: WorkState
    metadata: dict[str, str]
    created_at: str
    acknowledged_at: str | None = None
    started_at: str | None = None
    latest_heartbeat_at: str | None = None
    stop_requested_at: str | None = None
    stopped_at: str | None = None
    secret: str | None = None
    """Only in a poll's answer: URL-safe base64 of `{"sessions_token": …}`."""
    type: Literal["work"] = "work"


class WorkHeartbeat(msgspec.Struct, kw_only=True):
    """The wire `work_heartbeat` object."""

    last_heartbeat: str
    lease_extended: bool
    state: WorkState
    ttl_seconds: int
    type: Literal["work_heartbeat"] = "work_heartbeat"


class WorkQueueStats(msgspec.Struct, kw_only=True):
    """The wire `work_queue_stats` object."""

    depth: int
    pending: int
    oldest_queued_at: str | None
    workers_polling: int
    type: Literal["work_queue_stats"] = "work_queue_stats"


class UpdateWork(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/environments/{id}/work/{work_id}` body."""

    metadata: dict[str, str | None]


class StopWork(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST …/work/{work_id}/stop` body."""

    force: bool = False


class _Doc(msgspec.Struct, kw_only=True):
    """A work item as stored: the wire object (secret never kept) and its delivery."""

    work: Work
    polled_at: float | None = None
    """When it was last handed to a poll (unix seconds), while queued."""
    polled_by: str | None = None
    holder: str | None = None
    """Owner of the item's store lease, set by the first heartbeat of a delivery."""
    last_heartbeat: str | None = None
    ttl_s: int = DEFAULT_TTL_S
    token_hash: str | None = None


class SessionsToken(msgspec.Struct, kw_only=True):
    """What a sessions token (stored under its hash) lets its bearer act on."""

    work_id: str
    session_id: str
    environment_id: str
    workspace_id: str
    issued_by: str | None = None
    """The environment key whose poll got it (its revocation voids the token too)."""
    id: str = ""
    """A public name for the token (open streams end when the token is voided)."""


_decode_doc = msgspec.json.Decoder(_Doc).decode
_decode_token = msgspec.json.Decoder(SessionsToken).decode
_encode = msgspec.json.Encoder().encode


def token_hash(token: str) -> str:
    """The stored form of a sessions token (a random 256-bit secret: SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _secret(token: str) -> str:
    payload = json.dumps({"sessions_token": token}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _lease_name(work_id: str) -> str:
    return f"work:{work_id}"


def token_id(digest: str) -> str:
    """The public name of the token with this hash (for revoking its open streams)."""
    return f"sst:{digest[:24]}"


class WorkQueue:
    """Work items of self-hosted environments, and the calls workers make on them."""

    def __init__(
        self, store: Store, environments: EnvironmentService, *, ttl_s: int = DEFAULT_TTL_S
    ) -> None:
        self._store = store
        self._environments = environments
        self._ttl_s = ttl_s
        self._seen_workers: dict[tuple[str, str], float] = {}
        self._arrivals: dict[str, anyio.Event] = {}
        self._unsubscribe = store.subscribe(TOPIC, self._arrived)

    def close(self) -> None:
        """Stop listening for arrivals."""
        self._unsubscribe()

    # -- the engine's side ----------------------------------------------------------------

    async def ensure_item(self, session_id: str, environment_id: str, workspace_id: str) -> Work:
        """The session's live item, queued now if it has none."""
        lease = None
        for _ in range(50):  # one enqueuer per session at a time, across processes
            lease = await self._store.acquire_lease(f"enqueue:{session_id}", new_id("enq"), 10)
            if lease is not None:
                break
            await anyio.sleep(0.05)
        if lease is None:
            raise UnavailableError(
                f"session {session_id}: its work item is being queued elsewhere; retry",
                code="work_enqueue_busy",
                retryable=True,
            )
        try:
            live = await self._live_items(session_id)
            if live:
                return live[0].work
            now = now_ts()
            work = Work(
                id=new_id("work"),
                environment_id=environment_id,
                data=SessionWorkData(id=session_id),
                state="queued",
                metadata={},
                created_at=now,
            )
            doc = _Doc(work=work, ttl_s=self._ttl_s)
            await self._store.save_record(self._record(workspace_id, doc, now))
        finally:
            await self._store.release_lease(lease)
        await self._store.publish(TOPIC, environment_id)
        log.info("queued work %s for session %s", work.id, session_id)
        return work

    async def end_for_session(self, session_id: str) -> None:
        """The session is gone or terminated: stop its items and void their tokens."""
        for doc in await self._live_items(session_id, states=LIVE | {"stopping"}):
            try:
                await self._stop_doc(doc.work.environment_id, doc.work.id, force=True)
            except (ConflictError, NotFoundError):
                continue

    async def _live_items(self, session_id: str, *, states: frozenset[str] = LIVE) -> list[_Doc]:
        query = RecordQuery(
            kind=KIND,
            workspace_id=None,
            tags={"session_id": frozenset({session_id}), "state": states},
            limit=10,
        )
        return [_decode_doc(r.data) for r in await self._store.list_records(query)]

    # -- the worker's side ----------------------------------------------------------------

    async def poll(
        self,
        environment_id: str,
        *,
        worker_id: str | None,
        block_ms: int | None,
        reclaim_older_than_ms: int | None,
        issued_by: str | None = None,
    ) -> Work | None:
        """Deliver the oldest deliverable item (with its secret), or None once `block_ms`
        passed without one."""
        if block_ms is not None and not 1 <= block_ms <= 999:
            raise InvalidInputError("block_ms: must be between 1 and 999", code="invalid_block_ms")
        reclaim_ms = DEFAULT_RECLAIM_MS if reclaim_older_than_ms is None else reclaim_older_than_ms
        if reclaim_ms < 0:
            raise InvalidInputError(
                "reclaim_older_than_ms: must not be negative", code="invalid_reclaim"
            )
        await self._environment(environment_id)
        if worker_id:
            await self._saw_worker(environment_id, worker_id)
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while True:
            arrival = self._arrivals.setdefault(environment_id, anyio.Event())
            work = await self._claim(environment_id, worker_id, reclaim_ms / 1000, issued_by)
            if work is not None:
                return work
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with anyio.move_on_after(left):
                await arrival.wait()

    async def ack(self, environment_id: str, work_id: str) -> Work:
        """`queued` → `starting`: the worker has it."""
        for _ in range(_RETRIES):
            record, doc = await self._get(environment_id, work_id)
            work = doc.work
            if work.state in ("starting", "active"):
                return work
            if work.state != "queued":
                raise ConflictError(f"work {work_id} is {work.state}", code="work_stopped")
            if doc.polled_at is None:
                raise ConflictError(
                    f"work {work_id} was not delivered to a poll yet", code="work_not_polled"
                )
            work = msgspec.structs.replace(work, state="starting", acknowledged_at=now_ts())
            if await self._save(record, msgspec.structs.replace(doc, work=work)):
                return work
        raise _busy(work_id)

    async def heartbeat(
        self,
        environment_id: str,
        work_id: str,
        *,
        expected_last_heartbeat: str | None,
        desired_ttl_seconds: int | None,
    ) -> WorkHeartbeat:
        """Extend the item's lease, if `expected_last_heartbeat` is the stored one
        (`NO_HEARTBEAT` claims a delivery's first lease); 412 otherwise."""
        for _ in range(_RETRIES):
            record, doc = await self._get(environment_id, work_id)
            work = doc.work
            if work.state in ("stopping", "stopped"):
                return self._beat(doc, extended=False)
            stored = doc.last_heartbeat
            if expected_last_heartbeat is not None and expected_last_heartbeat != (
                stored if stored is not None else NO_HEARTBEAT
            ):
                raise PreconditionFailedError(
                    "expected_last_heartbeat does not match the item's last heartbeat: another "
                    "worker may hold its lease",
                    code="heartbeat_precondition_failed",
                    details={"current_state": self._lease_state(doc)},
                )
            if work.state == "queued":
                raise ConflictError(
                    f"work {work_id} is not acknowledged yet", code="work_not_acknowledged"
                )
            ttl = self._ttl(desired_ttl_seconds)
            holder = doc.holder or new_id("hold")  # set once per delivery, in _claim
            lease = await self._store.acquire_lease(_lease_name(work_id), holder, ttl)
            if lease is None:
                raise PreconditionFailedError(
                    "another worker holds this item's lease",
                    code="heartbeat_precondition_failed",
                    details={"current_state": self._lease_state(doc)},
                )
            now = now_ts()
            work = msgspec.structs.replace(
                work,
                state="active",
                started_at=work.started_at or now,
                latest_heartbeat_at=now,
            )
            updated = msgspec.structs.replace(
                doc, work=work, holder=holder, last_heartbeat=now, ttl_s=ttl
            )
            if await self._save(record, updated):
                return self._beat(updated, extended=True)
        raise _busy(work_id)

    async def stop(self, environment_id: str, work_id: str, *, force: bool) -> Work:
        """Stop an item: at once when forced or not yet running, else `stopping` (its
        worker hears it on the next heartbeat). 409 when it already stopped."""
        return await self._stop_doc(environment_id, work_id, force=force)

    async def _stop_doc(self, environment_id: str, work_id: str, *, force: bool) -> Work:
        for _ in range(_RETRIES):
            record, doc = await self._get(environment_id, work_id)
            work = doc.work
            if work.state == "stopped":
                raise ConflictError(f"work {work_id} already stopped", code="work_stopped")
            now = now_ts()
            if force or work.state in ("queued", "starting", "stopping"):
                work = msgspec.structs.replace(
                    work,
                    state="stopped",
                    stopped_at=now,
                    stop_requested_at=work.stop_requested_at or now,
                )
            else:
                work = msgspec.structs.replace(work, state="stopping", stop_requested_at=now)
            token = doc.token_hash if work.state == "stopped" else None
            updated = msgspec.structs.replace(doc, work=work)
            if work.state == "stopped":
                updated = msgspec.structs.replace(updated, token_hash=None)
            if not await self._save(record, updated):
                continue
            if token is not None:
                await self._drop_token(token)
            if work.state == "stopped" and doc.holder is not None:
                lease = await self._store.acquire_lease(_lease_name(work_id), doc.holder, 1)
                if lease is not None:
                    await self._store.release_lease(lease)
            return work
        raise _busy(work_id)

    async def retrieve(self, environment_id: str, work_id: str) -> Work:
        """One item (never its secret)."""
        return (await self._get(environment_id, work_id))[1].work

    async def update(self, environment_id: str, work_id: str, params: UpdateWork) -> Work:
        """Patch the item's metadata."""
        for _ in range(_RETRIES):
            record, doc = await self._get(environment_id, work_id)
            metadata = patch_metadata(doc.work.metadata, params.metadata)
            work = msgspec.structs.replace(doc.work, metadata=metadata)
            if await self._save(record, msgspec.structs.replace(doc, work=work)):
                return work
        raise _busy(work_id)

    async def list_items(self, query: RecordQuery) -> list[Work]:
        """A page of items (the API builds the query, tagged with the environment)."""
        return [_decode_doc(r.data).work for r in await self._store.list_records(query)]

    async def stats(self, environment_id: str) -> WorkQueueStats:
        """Queue depth, pending (polled, not acked), the oldest queued, and the workers
        that polled in the last 30 seconds (by `Anthropic-Worker-ID`)."""
        environment = await self._environment(environment_id)
        queued = await self._all(
            RecordQuery(
                kind=KIND,
                workspace_id=environment.workspace_id,
                tags={
                    "environment_id": frozenset({environment_id}),
                    "state": frozenset({"queued"}),
                },
                limit=500,
            )
        )
        docs = [_decode_doc(r.data) for r in queued]
        now = time.time()
        workers = await self._all(
            RecordQuery(
                kind=WORKER_KIND,
                workspace_id=environment.workspace_id,
                tags={"environment_id": frozenset({environment_id})},
                limit=500,
            )
        )
        recent = 0
        for record in workers:
            seen = msgspec.json.decode(record.data, type=dict[str, Any]).get("seen", 0.0)
            if now - float(seen) <= WORKERS_WINDOW_S:
                recent += 1
        return WorkQueueStats(
            depth=len(docs),
            pending=sum(d.polled_at is not None for d in docs),
            oldest_queued_at=min((d.work.created_at for d in docs), default=None),
            workers_polling=recent,
        )

    async def token(self, token: str) -> SessionsToken | None:
        """What a presented sessions token is for (None: not a live token). The item
        itself must still name it: a token voided by a re-delivery or a stop stays void
        even if a crash kept its record."""
        digest = token_hash(token)
        try:
            record = await self._store.get_record(TOKEN_KIND, digest)
            found = _decode_token(record.data)
            item = _decode_doc((await self._store.get_record(KIND, found.work_id)).data)
        except NotFoundError:
            return None
        if item.token_hash != digest or item.work.state == "stopped":
            return None
        return msgspec.structs.replace(found, id=token_id(digest))

    # -- private --------------------------------------------------------------------------

    def _arrived(self, environment_id: str) -> None:
        event = self._arrivals.pop(environment_id, None)
        if event is not None:
            event.set()

    async def _environment(self, environment_id: str) -> Record:
        try:
            record = await self._store.get_record(ENVIRONMENT_KIND, environment_id)
        except NotFoundError:
            raise NotFoundError(
                f"environment {environment_id!r} not found", code="environment_not_found"
            ) from None
        environment = await self._environments.get(environment_id)
        if not isinstance(environment.config, SelfHostedConfig):
            raise InvalidInputError(
                f"environment {environment_id} is not self-hosted: it has no work queue",
                code="not_self_hosted",
            )
        return record

    async def _all(self, query: RecordQuery) -> list[Record]:
        records: list[Record] = []
        while True:
            page = await self._store.list_records(query)
            records.extend(page)
            if len(page) < query.limit:
                return records
            query = msgspec.structs.replace(query, after=(page[-1].created_at, page[-1].id))

    async def _saw_worker(self, environment_id: str, worker_id: str) -> None:
        """Note a polling worker (written at most every 10 s per worker and process)."""
        key = (environment_id, worker_id[:256])
        now = time.time()
        if now - self._seen_workers.get(key, 0.0) < 10:
            return
        if len(self._seen_workers) > 10_000:  # many worker ids: keep the recent ones
            self._seen_workers = {
                k: t for k, t in self._seen_workers.items() if now - t < WORKERS_WINDOW_S
            }
        self._seen_workers[key] = now
        environment = await self._store.get_record(ENVIRONMENT_KIND, environment_id)
        record_id = hashlib.sha256(f"{environment_id}\x00{worker_id}".encode()).hexdigest()
        stamp = now_ts()
        data = _encode({"worker_id": worker_id[:256], "seen": now})
        for _ in range(3):
            try:
                current = await self._store.get_record(WORKER_KIND, record_id)
                await self._store.save_record(
                    msgspec.structs.replace(current, data=data, updated_at=stamp)
                )
                return
            except NotFoundError:
                try:
                    await self._store.save_record(
                        Record(
                            kind=WORKER_KIND,
                            id=record_id,
                            workspace_id=environment.workspace_id,
                            data=data,
                            created_at=stamp,
                            updated_at=stamp,
                            tags={"environment_id": environment_id},
                        )
                    )
                    return
                except ConflictError:
                    continue
            except ConflictError:
                continue

    async def _claim(
        self, environment_id: str, worker_id: str | None, reclaim_s: float, issued_by: str | None
    ) -> Work | None:
        """Hand the oldest deliverable item to this poll: queued ones first, then those
        whose lease lapsed (paged through, however many are held)."""
        for states in (frozenset({"queued"}), frozenset({"starting", "active"})):
            query = RecordQuery(
                kind=KIND,
                workspace_id=None,
                tags={"environment_id": frozenset({environment_id}), "state": states},
                limit=100,
            )
            while True:
                records = await self._store.list_records(query)
                now = time.time()
                held = await self._store.held_leases([_lease_name(r.id) for r in records])
                for record in records:
                    doc = _decode_doc(record.data)
                    if self._deliverable(doc, now, reclaim_s, held):
                        work = await self._deliver(record, doc, worker_id, issued_by, now)
                        if work is not None:
                            return work
                if len(records) < query.limit:
                    break
                last = records[-1]
                query = msgspec.structs.replace(query, after=(last.created_at, last.id))
        return None

    async def _deliver(
        self,
        record: Record,
        doc: _Doc,
        worker_id: str | None,
        issued_by: str | None,
        now: float,
    ) -> Work | None:
        """Claim one item for a poll (None when another poll took it first)."""
        token = "sst_" + secrets.token_urlsafe(32)
        digest = token_hash(token)
        work = msgspec.structs.replace(
            doc.work, state="queued", acknowledged_at=None, latest_heartbeat_at=None
        )
        claimed = msgspec.structs.replace(
            doc,
            work=work,
            polled_at=now,
            polled_by=worker_id[:256] if worker_id else None,
            holder=new_id("hold"),
            last_heartbeat=None,
            ttl_s=self._ttl_s,
            token_hash=digest,
        )
        # The item names its one valid token from this save on: the old one is void even
        # if what follows never runs.
        if not await self._save(record, claimed):
            return None
        stamp = now_ts()
        await self._store.save_record(
            Record(
                kind=TOKEN_KIND,
                id=digest,
                workspace_id=record.workspace_id,
                data=_encode(
                    SessionsToken(
                        work_id=work.id,
                        session_id=work.data.id,
                        environment_id=work.environment_id,
                        workspace_id=record.workspace_id,
                        issued_by=issued_by,
                    )
                ),
                created_at=stamp,
                updated_at=stamp,
            )
        )
        if doc.token_hash is not None:
            await self._drop_token(doc.token_hash)
        if doc.work.state != "queued":
            log.warning("work %s: its lease lapsed; delivered again", work.id)
        return msgspec.structs.replace(work, secret=_secret(token))

    def _deliverable(self, doc: _Doc, now: float, reclaim_s: float, held: set[str]) -> bool:
        work = doc.work
        if work.state == "queued":
            return doc.polled_at is None or now - doc.polled_at >= reclaim_s
        if _lease_name(work.id) in held:
            return False
        if doc.last_heartbeat is None:
            # Acked, first heartbeat not in yet: its worker gets a lease's time for it.
            return doc.polled_at is not None and now - doc.polled_at >= doc.ttl_s
        return True  # its lease lapsed

    async def _drop_token(self, digest: str) -> None:
        """Delete a voided token's record and end the streams it opened (the item's doc
        no longer names it, which alone already refuses it)."""
        try:
            await self._store.delete_record(TOKEN_KIND, digest)
        except NotFoundError:
            pass
        await self._store.publish(REVOKED_TOPIC, token_id(digest))

    async def _get(self, environment_id: str, work_id: str) -> tuple[Record, _Doc]:
        try:
            record = await self._store.get_record(KIND, work_id)
        except NotFoundError:
            record = None
        doc = _decode_doc(record.data) if record is not None else None
        if record is None or doc is None or doc.work.environment_id != environment_id:
            raise NotFoundError(f"work {work_id!r} not found", code="work_not_found")
        return record, doc

    async def _save(self, record: Record, doc: _Doc) -> bool:
        """Save with the record's revision; False when it moved meanwhile."""
        try:
            await self._store.save_record(
                msgspec.structs.replace(
                    record,
                    data=_encode(doc),
                    updated_at=now_ts(),
                    tags=_tags(doc),
                )
            )
        except ConflictError:
            return False
        return True

    def _record(self, workspace_id: str, doc: _Doc, now: str) -> Record:
        return Record(
            kind=KIND,
            id=doc.work.id,
            workspace_id=workspace_id,
            data=_encode(doc),
            created_at=now,
            updated_at=now,
            tags=_tags(doc),
        )

    def _ttl(self, desired: int | None) -> int:
        if desired is None:
            return self._ttl_s
        return max(MIN_TTL_S, min(MAX_TTL_S, desired))

    def _beat(self, doc: _Doc, *, extended: bool) -> WorkHeartbeat:
        return WorkHeartbeat(
            last_heartbeat=doc.last_heartbeat or "",
            lease_extended=extended,
            state=doc.work.state,
            ttl_seconds=doc.ttl_s,
        )

    def _lease_state(self, doc: _Doc) -> dict[str, Any]:
        return {
            "last_heartbeat": doc.last_heartbeat,
            "lease_extended": False,
            "state": doc.work.state,
            "ttl_seconds": doc.ttl_s,
        }


def _tags(doc: _Doc) -> dict[str, str]:
    return {
        "environment_id": doc.work.environment_id,
        "session_id": doc.work.data.id,
        "state": doc.work.state,
    }


def _busy(work_id: str) -> ConflictError:
    return ConflictError(
        f"work {work_id} is being changed concurrently; retry", code="work_busy", retryable=True
    )


class RemoteExecutor:
    """The executor of self-hosted sessions: their calls are answered by the workers."""

    remote = True

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue

    async def run(
        self,
        session_id: str,
        environment_id: str,
        name: str,
        params: dict[str, Any],
        report: Report,
    ) -> ToolOutcome:
        raise AssertionError("a self-hosted session's tools run on its workers")

    async def hand_over(self, session_id: str, environment_id: str, workspace_id: str) -> None:
        """Make sure a work item is live for the session, so a worker will come."""
        await self._queue.ensure_item(session_id, environment_id, workspace_id)
