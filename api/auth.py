"""Who is calling: `x-api-key` or `Authorization: Bearer` (the SDK sends the latter)."""

from __future__ import annotations

from starlette.requests import Request

from sessiond.runtime.workspaces import Principal
from sessiond.store.errors import PermissionDeniedError


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
    """Authenticate once per request (cached on `request.state`)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    found: Principal = await request.app.state.services.workspaces.authenticate(
        presented_key(request), request.headers.get("anthropic-workspace-id")
    )
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
