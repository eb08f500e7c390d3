"""Server settings, read once from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from sessiond.runtime.limits import Limits
from sessiond.runtime.providers.resilience import RetryPolicy
from sessiond.runtime.providers.routing import ProviderConfig, configs_from_env
from sessiond.runtime.tools.toolset import ToolLimits

DEFAULT_DATA_DIR = "~/.local/share/sessiond"
DEFAULT_STATE_DIR = "~/.local/state"


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
    """Where each session's tool working directory lives (default:
    `$XDG_STATE_HOME/sessiond/workdirs`); never the data directory or inside it."""
    providers: list[ProviderConfig] = []
    """Model providers, matched before the defaults (`SESSIOND_PROVIDERS`)."""
    retry: RetryPolicy = RetryPolicy()
    run_engine: bool = True
    """Run the turn loop in this process (off for API-only processes)."""
    limits: Limits = Limits()
    tool_limits: ToolLimits = ToolLimits()
    python_scorer_modules: frozenset[str] = frozenset()
    """Modules whose callables `python` eval scorers sent over HTTP may name
    (`SESSIOND_PYTHON_SCORER_MODULES`, comma-separated); none by default."""
    recovery_sweep_s: float = 5.0
    """How often the supervisor looks for sessions owed a step that nothing is driving
    (a wake that never came); start-up looks once before serving."""

    def resolved_workdir_root(self) -> Path:
        """The work directory root, checked to be apart from the database's directory
        (a command's `../..` must not reach the database). Raises ValueError."""
        if self.workdir_root:
            root = Path(self.workdir_root).expanduser()
        else:
            state = Path(os.environ.get("XDG_STATE_HOME") or DEFAULT_STATE_DIR).expanduser()
            root = state / "sessiond" / "workdirs"
        root = root.resolve()
        if self.database_url.startswith("sqlite:///"):
            data_dir = Path(self.database_url[len("sqlite:///") :]).expanduser().resolve().parent
            if root == data_dir or data_dir in root.parents or root in data_dir.parents:
                raise ValueError(
                    f"the work directory root {root} overlaps the data directory {data_dir}: "
                    "set SESSIOND_WORKDIR_ROOT to a directory apart from the database"
                )
        return root

    @classmethod
    def from_env(cls) -> Config:
        """`SESSIOND_DATABASE_URL` (default: a SQLite file under `SESSIOND_DATA_DIR`)."""
        url = os.environ.get("SESSIOND_DATABASE_URL")
        if not url:
            data_dir = Path(os.environ.get("SESSIOND_DATA_DIR", DEFAULT_DATA_DIR)).expanduser()
            data_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{data_dir / 'sessiond.db'}"
        defaults = Limits()
        limits = Limits(
            **{
                name: _int_env(f"SESSIOND_{name.upper()}", getattr(defaults, name))
                for name in Limits.__struct_fields__
            }
        )
        modules = os.environ.get("SESSIOND_PYTHON_SCORER_MODULES", "")
        return cls(
            database_url=url,
            admin_api_key=os.environ.get("SESSIOND_API_KEY") or None,
            providers=configs_from_env(),
            max_body_bytes=_int_env("SESSIOND_MAX_BODY_BYTES", 32 * 1024 * 1024),
            run_engine=os.environ.get("SESSIOND_RUN_ENGINE", "1").lower() not in ("0", "false"),
            workdir_root=os.environ.get("SESSIOND_WORKDIR_ROOT", ""),
            limits=limits,
            python_scorer_modules=frozenset(m.strip() for m in modules.split(",") if m.strip()),
        )


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name}: must be at least 1, got {value}")
    return value
