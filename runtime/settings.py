"""Settings of the runtime (database, providers, tools, limits, workers), read once from
the environment. They live here, not in the HTTP layer, so that `sessiond worker` runs the
engine without importing it; `api/config.py` adds what only HTTP needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from sessiond.runtime.limits import Limits
from sessiond.runtime.providers.resilience import RetryPolicy
from sessiond.runtime.providers.routing import ProviderConfig, configs_from_env
from sessiond.runtime.tools.toolset import ToolLimits

DEFAULT_DATA_DIR = "~/.local/share/sessiond"
DEFAULT_STATE_DIR = "~/.local/state"


class Settings(msgspec.Struct, kw_only=True):
    """Everything the runtime needs to start; tests build it directly."""

    database_url: str
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
    (a wake that never came, a worker that died); start-up looks once before serving."""
    lease_ttl_s: float = 15.0
    """On PostgreSQL, how long a worker's hold on a session lasts unless renewed (every
    third of it): how long a session waits after its worker dies."""
    drives: int = 256
    """Sessions this process drives at once (`sessiond worker --concurrency`)."""
    sandbox: str = "auto"
    """`auto`: tools of cloud environments run under bubblewrap when it works here, on the
    host otherwise (warned at start); `bwrap`: refuse to start without it; `off`: never
    (`SESSIOND_SANDBOX`)."""
    sandbox_uid_base: int = 2_000_000_000
    """Run as root, each session's commands get uid `base + hash(session id) % 10^8`."""
    work_lease_ttl_s: int = 300
    """A self-hosted worker's lease on a work item lasts this long unless it heartbeats
    (`SESSIOND_WORK_LEASE_TTL_S`): how long a dead worker's session waits for another."""
    max_file_bytes: int = 500 * 1024 * 1024
    """Largest file or skill upload (`SESSIOND_MAX_FILE_BYTES`; 413 past it)."""
    file_quota_bytes: int = 100 * 1024 * 1024 * 1024
    """Bytes of files one workspace may keep (`SESSIOND_FILE_QUOTA_BYTES`;
    `storage_quota_exceeded` past it)."""
    secret_key: str = ""
    """The key vault secrets are encrypted with (`SESSIOND_SECRET_KEY`, urlsafe base64 of
    32 bytes); empty: a key file beside the data, made with 0600 on first start."""
    secret_key_file: str = ""
    """Where that key file is (`SESSIOND_SECRET_KEY_FILE`; default: `secret.key` in the
    data directory)."""
    egress_allow_private: tuple[str, ...] = ()
    """Internal destinations (`IP`, `IP:port`, CIDR) the egress proxy may open for
    sandboxes, which it otherwise refuses like every loopback and private address
    (`SESSIOND_EGRESS_ALLOW_PRIVATE`, comma-separated)."""

    @property
    def distributed(self) -> bool:
        """Whether several processes may share the database (PostgreSQL): sessions are then
        driven under leases, and woken by the database's notifications."""
        return self.database_url.startswith(("postgres://", "postgresql://"))

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
    def from_env(cls) -> Settings:
        """`SESSIOND_DATABASE_URL` (default: a SQLite file under `SESSIOND_DATA_DIR`)."""
        return cls(**settings_from_env())


def settings_from_env() -> dict[str, Any]:
    """The runtime settings the environment gives, as keyword arguments."""
    url = os.environ.get("SESSIOND_DATABASE_URL")
    if not url:
        data_dir = Path(os.environ.get("SESSIOND_DATA_DIR", DEFAULT_DATA_DIR)).expanduser()
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{data_dir / 'sessiond.db'}"
    defaults = Limits()
    limits = Limits(
        **{
            name: int_env(f"SESSIOND_{name.upper()}", getattr(defaults, name))
            for name in Limits.__struct_fields__
        }
    )
    modules = os.environ.get("SESSIOND_PYTHON_SCORER_MODULES", "")
    private = os.environ.get("SESSIOND_EGRESS_ALLOW_PRIVATE", "")
    sandbox = os.environ.get("SESSIOND_SANDBOX", "auto").strip().lower() or "auto"
    if sandbox not in ("auto", "bwrap", "off"):
        raise ValueError(f"SESSIOND_SANDBOX: expected auto, bwrap or off, got {sandbox!r}")
    return {
        "database_url": url,
        "providers": configs_from_env(),
        "run_engine": os.environ.get("SESSIOND_RUN_ENGINE", "1").lower() not in ("0", "false"),
        "workdir_root": os.environ.get("SESSIOND_WORKDIR_ROOT", ""),
        "limits": limits,
        "python_scorer_modules": frozenset(m.strip() for m in modules.split(",") if m.strip()),
        "recovery_sweep_s": float_env("SESSIOND_SWEEP_S", 5.0),
        "lease_ttl_s": float_env("SESSIOND_LEASE_TTL_S", 15.0),
        "sandbox": sandbox,
        "work_lease_ttl_s": int_env("SESSIOND_WORK_LEASE_TTL_S", 300),
        "max_file_bytes": int_env("SESSIOND_MAX_FILE_BYTES", 500 * 1024 * 1024),
        "file_quota_bytes": int_env("SESSIOND_FILE_QUOTA_BYTES", 100 * 1024**3),
        "secret_key": os.environ.get("SESSIOND_SECRET_KEY", ""),
        "secret_key_file": os.environ.get("SESSIOND_SECRET_KEY_FILE", ""),
        "egress_allow_private": tuple(p.strip() for p in private.split(",") if p.strip()),
    }


def float_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name}: must be positive, got {value}")
    return value


def int_env(name: str, default: int) -> int:
    """A positive integer setting from the environment."""
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
