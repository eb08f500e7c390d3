"""Server settings, read once from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from sessiond.runtime.providers.resilience import RetryPolicy
from sessiond.runtime.providers.routing import ProviderConfig, configs_from_env

DEFAULT_DATA_DIR = "~/.local/share/sessiond"


class Config(msgspec.Struct, kw_only=True):
    """Everything the app needs to start; tests build it directly."""

    database_url: str
    admin_api_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    sse_ping_s: float = 15.0
    """Keepalive interval: well inside the TypeScript SDK's 300 s body timeout."""
    sse_send_timeout_s: float = 30.0
    """A client that cannot take a frame for this long is dropped instead of buffered for."""
    workdir_root: str = ""
    """Where each session's tool working directory lives (default: beside the database)."""
    providers: list[ProviderConfig] = []
    """Model providers, matched before the defaults (`SESSIOND_PROVIDERS`)."""
    retry: RetryPolicy = RetryPolicy()
    run_engine: bool = True
    """Run the turn loop in this process (off for API-only processes)."""

    def resolved_workdir_root(self) -> Path:
        """The work directory root, defaulting to `workdirs/` beside a SQLite database."""
        if self.workdir_root:
            return Path(self.workdir_root)
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///") :]).parent / "workdirs"
        return Path(DEFAULT_DATA_DIR).expanduser() / "workdirs"

    @classmethod
    def from_env(cls) -> Config:
        """`SESSIOND_DATABASE_URL` (default: a SQLite file under `SESSIOND_DATA_DIR`)."""
        url = os.environ.get("SESSIOND_DATABASE_URL")
        if not url:
            data_dir = Path(os.environ.get("SESSIOND_DATA_DIR", DEFAULT_DATA_DIR)).expanduser()
            data_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{data_dir / 'sessiond.db'}"
        return cls(
            database_url=url,
            admin_api_key=os.environ.get("SESSIOND_API_KEY") or None,
            providers=configs_from_env(),
            max_body_bytes=int(os.environ.get("SESSIOND_MAX_BODY_BYTES", 32 * 1024 * 1024)),
            run_engine=os.environ.get("SESSIOND_RUN_ENGINE", "1").lower() not in ("0", "false"),
        )
