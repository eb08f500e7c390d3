"""Server settings: the runtime's (runtime/settings.py) and what only HTTP needs."""

from __future__ import annotations

import os

from sessiond.runtime.settings import Settings, int_env, settings_from_env


class Config(Settings, kw_only=True):
    """Everything the app needs to start; tests build it directly."""

    admin_api_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    sse_ping_s: float = 15.0
    """Keepalive interval: well inside the TypeScript SDK's 300 s body timeout."""
    sse_send_timeout_s: float = 30.0
    """A client that cannot take a frame for this long is dropped instead of buffered for."""

    @classmethod
    def from_env(cls) -> Config:
        """The runtime's settings plus `SESSIOND_API_KEY` and `SESSIOND_MAX_BODY_BYTES`."""
        return cls(
            **settings_from_env(),
            admin_api_key=os.environ.get("SESSIOND_API_KEY") or None,
            max_body_bytes=int_env("SESSIOND_MAX_BODY_BYTES", 32 * 1024 * 1024),
        )
