"""Who is calling: `x-api-key` or `Authorization: Bearer` (the SDK sends the latter), and
what a self-hosted environment's credentials may reach.

An API key acts on its whole workspace. An environment key (runtime/resources/environment_keys.py)
reaches its environment's work queue and the sessions on that environment; a work item's
sessions token (runtime/resources/work.py) reaches that one session and that one item. Anything else
is answered 404 for them, as if it did not exist: a worker's credential learns nothing of
the rest of the workspace. Both may read their sessions and send them tool results only.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from sessiond.api.services import services
from sessiond.runtime.resources.environment_keys import PREFIX as ENVIRONMENT_KEY_PREFIX
from sessiond.runtime.resources.workspaces import Principal
from sessiond.store.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
)

_SESSION_PATH = re.compile(r"^/v1/sessions/(?P<session>[^/]+)(?P<rest>/events(?:/stream)?)?/?$")
_WORK_PATH = re.compile(
    r"^/v1/environments/(?P<environment>[^/]+)/work(?:/(?P<rest>[^/]+(?:/[^/]+)?))?/?$"
)
_TOKEN_PREFIX = "sst_"
_WORKER_EVENT_TYPES = frozenset({"user.tool_result", "user.custom_tool_result"})


def presented_key(request: Request) -> str | None:
    """The key from `x-api-key`, else from `Authorization: Bearer …`."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def principal(request: Request) -> Principal:
    """Authenticate once per request (cached on `request.state`); a scoped credential
    outside its scope gets NotFoundError."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    secret = presented_key(request)
    header = request.headers.get("anthropic-workspace-id")
    found = await _scoped(request, secret) if secret else None
    if found is None:
        found = await services(request).workspaces.authenticate(secret, header)
    elif header and header != found.workspace_id:
        raise PermissionDeniedError(
            "this key belongs to another workspace than `anthropic-workspace-id` names",
            code="workspace_mismatch",
        )
    if found.scope != "workspace":
        await _check_scope(request, found)
    request.state.principal = found
    return found


async def workspace_id(request: Request) -> str:
    """The workspace the caller acts in."""
    return (await principal(request)).workspace_id


async def require_admin(request: Request) -> Principal:
    """Only the admin key (`SESSIOND_API_KEY`) may manage workspaces and keys."""
    found = await principal(request)
    if not found.is_admin:
        raise PermissionDeniedError("this operation needs the admin key", code="admin_required")
    return found


async def require_workspace_key(request: Request) -> str:
    """The workspace, for operations only a workspace's API key may do (minting and
    revoking environment keys)."""
    found = await principal(request)
    if found.scope != "workspace":
        raise _hidden(request)
    return found.workspace_id


def worker_may_send(found: Principal, event_types: list[str]) -> None:
    """A worker's credential sends tool results only (raises PermissionDeniedError)."""
    if found.scope == "workspace":
        return
    other = sorted(set(event_types) - _WORKER_EVENT_TYPES)
    if other:
        raise PermissionDeniedError(
            f"an environment key or sessions token sends tool results only, not {other[0]!r}",
            code="worker_event_refused",
        )


async def _scoped(request: Request, secret: str) -> Principal | None:
    """The principal of an environment key or a sessions token, None for anything else;
    an unknown or revoked one is refused like a bad API key."""
    svc = services(request)
    if secret.startswith(ENVIRONMENT_KEY_PREFIX):
        resolved = await svc.environment_keys.resolve(secret)
        if resolved is None:
            raise AuthenticationError(
                "invalid or revoked environment key", code="invalid_environment_key"
            )
        workspace, key = resolved
        return Principal(
            workspace_id=workspace,
            key_id=key.id,
            scope="environment",
            environment_id=key.environment_id,
        )
    if secret.startswith(_TOKEN_PREFIX):
        token = await svc.work.token(secret)
        if token is None or (
            token.issued_by is not None
            and await svc.environment_keys.revoked(token.environment_id, token.issued_by)
        ):
            raise AuthenticationError(
                "invalid sessions token: its work item stopped or was delivered again, or "
                "the environment key that polled it was revoked",
                code="invalid_sessions_token",
            )
        return Principal(
            workspace_id=token.workspace_id,
            key_id=token.id,
            scope="session",
            environment_id=token.environment_id,
            session_id=token.session_id,
            work_id=token.work_id,
        )
    return None


async def _check_scope(request: Request, found: Principal) -> None:
    path, method = request.url.path, request.method
    work = _WORK_PATH.match(path)
    if work is not None and work.group("environment") == found.environment_id:
        # §2.7: workers poll, ack, heartbeat, stop, list and read stats; reading or
        # updating one item is for the workspace's API keys. A sessions token serves its
        # one item.
        item, _, action = (work.group("rest") or "").partition("/")
        if found.scope == "environment":
            if item in ("", "poll", "stats") or action in ("ack", "heartbeat", "stop"):
                return
        elif item == found.work_id and action in ("ack", "heartbeat", "stop"):
            return
        raise _hidden(request)
    session = _SESSION_PATH.match(path)
    if session is not None:
        session_id = session.group("session")
        rest = session.group("rest") or ""
        allowed = method == "GET" or (method == "POST" and rest == "/events")
        if allowed and found.scope == "session" and session_id == found.session_id:
            return
        if allowed and found.scope == "environment":
            svc = services(request)
            try:
                record = await svc.sessions.get_record(found.workspace_id, session_id)
            except NotFoundError:
                raise _hidden(request) from None
            if svc.sessions.environment_of(record) == found.environment_id:
                return
    raise _hidden(request)


def _hidden(request: Request) -> NotFoundError:
    return NotFoundError(
        f"{request.method} {request.url.path}: not found", code="not_found_for_credential"
    )
