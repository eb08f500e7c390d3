"""The agent toolset `agent_toolset_20260401`, run in a session's place: its sandbox, or
the host when there is none.

Each tool takes the input shape the contract gives (`bash {command, restart?, timeout_ms?}`,
`read {file_path, view_range?}`, `write {file_path, content}`, `edit {file_path,
old_string, new_string, replace_all?}`, `glob {pattern, path?}`, `grep {pattern, path?}`)
and returns a `ToolOutcome`: text for the model and an error flag. A tool never raises
for the model's mistakes (bad path, no match, non-zero exit): those are results the model
should see. Output is capped so one tool call cannot flood the context or the log.

Every tool is a process: `bash` runs the command, and the file tools run
`runtime/tools/file_worker.py`, so none of them acts with the server's own rights when a
sandbox is there (runtime/sandbox/). A `Place` says how a process starts there; `HostPlace`
starts it on the host, in the session's directory with a minimal environment (what that
isolates, and what not, is in the README's "Where tools run"). Paths are resolved inside
the session's directory; an absolute path, `..` or a link that leaves it is refused.
Every failure inside a tool, whatever it raises, comes back as an error result: a tool
never fails the engine's step.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Protocol

import msgspec

from sessiond.runtime.tools.process import Launch, Ran, run_process

log = logging.getLogger("sessiond.tools")

MAX_OUTPUT_CHARS = 30_000
DEFAULT_BASH_TIMEOUT_S = 120.0
MAX_BASH_TIMEOUT_S = 600.0
SEARCH_TIMEOUT_S = 30.0
FILE_TOOL_TIMEOUT_S = 60.0
MAX_MATCHES = 500
TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
FILE_WORKER = str(Path(__file__).with_name("file_worker.py"))
_TOOL_PATH = "/usr/local/bin:/usr/bin:/bin"
_FILE_TOOLS = ("read", "write", "edit", "glob", "grep")


class ToolLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of tool processes (server settings; the sandbox enforces the resource ones)."""

    default_timeout_s: float = DEFAULT_BASH_TIMEOUT_S
    """A command's wall-clock limit when the call gives none."""
    max_timeout_s: float = MAX_BASH_TIMEOUT_S
    """The most a call's `timeout_ms` may ask for."""
    search_timeout_s: float = SEARCH_TIMEOUT_S
    """`grep` and `glob` are killed after this long."""
    memory_bytes: int = 4 << 30
    """Address space of each sandboxed process (RLIMIT_AS)."""
    file_bytes: int = 1 << 30
    """Largest file a sandboxed process may write (RLIMIT_FSIZE)."""
    processes: int = 512
    """Processes and threads of one session's sandbox uid (RLIMIT_NPROC)."""
    tmp_bytes: int = 256 << 20
    """Size of the sandbox's private /tmp."""
    disk_floor_bytes: int = 1 << 30
    """A command is stopped when the disk under the work directories has less free."""


class ToolOutcome(msgspec.Struct, frozen=True):
    """What a tool returns to the model."""

    text: str
    is_error: bool = False


class Place(Protocol):
    """Where a session's tool processes run."""

    @property
    def root(self) -> str:
        """The session's directory as the processes see it."""
        ...

    @property
    def python(self) -> str:
        """A Python 3 interpreter the processes can run."""
        ...

    @property
    def file_worker(self) -> str:
        """`runtime/tools/file_worker.py` as the processes see it."""
        ...

    def launch(self, argv: list[str], *, network: bool, timeout_s: float) -> Launch:
        """How to start `argv` there (`network`: whether it gets the environment's
        network; file tools get none)."""
        ...


class HostPlace:
    """The host itself: processes run in the session's directory with the tool
    environment, as the server's user (no sandbox)."""

    def __init__(self, workdir: Path, *, disk_floor_bytes: int = 0) -> None:
        self._workdir = workdir
        self._disk_floor_bytes = disk_floor_bytes

    @property
    def root(self) -> str:
        return str(self._workdir.resolve())

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def file_worker(self) -> str:
        return FILE_WORKER

    def launch(self, argv: list[str], *, network: bool, timeout_s: float) -> Launch:
        return Launch(
            argv=argv,
            cwd=self.root,
            env=tool_environment(self.root),
            disk_floor_bytes=self._disk_floor_bytes,
        )


class _ToolError(Exception):
    """A failure to report to the model as an error result."""


def _cap(text: str, note: str = "") -> str:
    """`text` cut to the output cap, then `note` (an exit code, a timeout), never cut."""
    if len(text) > MAX_OUTPUT_CHARS:
        dropped = len(text) - MAX_OUTPUT_CHARS
        text = text[:MAX_OUTPUT_CHARS] + f"\n[output truncated: {dropped} more characters]"
    return f"{text}\n{note}" if note else text


def tool_environment(home: str) -> dict[str, str]:
    """The whole environment a tool process gets: nothing of the server's own (its API
    keys, its database URL) reaches a command."""
    return {
        "PATH": _TOOL_PATH,
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": home,
    }


def _text(ran: Ran) -> str:
    return ran.output.decode(errors="replace")


def _stopped(ran: Ran, timeout_s: float) -> str | None:
    if ran.disk_full:
        return "[stopped: the disk is nearly full]"
    if ran.timed_out:
        return f"[timed out after {timeout_s:g} s]"
    return None


async def _bash(place: Place, params: dict[str, Any], limits: ToolLimits) -> ToolOutcome:
    if params.get("restart"):
        return ToolOutcome("bash session restarted (each command runs in a fresh shell)")
    command = params.get("command")
    if not isinstance(command, str):
        raise _ToolError("command: expected a string")
    if "\x00" in command:
        raise _ToolError("command: cannot hold a NUL character")
    timeout_ms = params.get("timeout_ms")
    timeout_s = limits.default_timeout_s
    if isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        timeout_s = min(timeout_ms / 1000, limits.max_timeout_s)
    launch = place.launch(["/bin/bash", "-c", command], network=True, timeout_s=timeout_s)
    ran = await run_process(launch, timeout_s)
    text = _text(ran)
    stopped = _stopped(ran, timeout_s)
    if stopped is not None:
        return ToolOutcome(_cap(text, stopped), is_error=True)
    if ran.returncode != 0:
        return ToolOutcome(_cap(text, f"[exit code {ran.returncode}]"), is_error=True)
    return ToolOutcome(_cap(text) if text else "(no output)")


async def _file_tool(
    name: str, place: Place, params: dict[str, Any], limits: ToolLimits
) -> ToolOutcome:
    """A file tool in `runtime/tools/file_worker.py`, in the session's place."""
    timeout_s = limits.search_timeout_s if name in ("grep", "glob") else FILE_TOOL_TIMEOUT_S
    call = {
        "tool": name,
        "input": params,
        "max_output": MAX_OUTPUT_CHARS,
        "max_matches": MAX_MATCHES,
    }
    argv = [place.python, "-I", "-S", place.file_worker, place.root]
    launch = place.launch(argv, network=False, timeout_s=timeout_s)
    ran = await run_process(launch, timeout_s, stdin=msgspec.json.encode(call))
    text = _text(ran)
    if ran.timed_out and not ran.disk_full:
        return ToolOutcome(f"{name} timed out after {timeout_s:g} s", is_error=True)
    stopped = _stopped(ran, timeout_s)
    if stopped is not None:
        return ToolOutcome(_cap(text, stopped), is_error=True)
    if ran.returncode == 0:
        return ToolOutcome(_cap(text))
    if ran.returncode == 1:
        return ToolOutcome(_cap(text), is_error=True)
    return ToolOutcome(
        _cap(f"{name} failed (exit code {ran.returncode}): {text.strip()}"), is_error=True
    )


async def run_tool(
    name: str,
    params: dict[str, Any],
    workdir: Path | None = None,
    limits: ToolLimits | None = None,
    *,
    place: Place | None = None,
) -> ToolOutcome:
    """Run one toolset tool in `place` (default: the host, in `workdir`). Whatever goes
    wrong comes back as an error outcome."""
    limits = limits or ToolLimits()
    try:
        if place is None:
            if workdir is None:
                raise ValueError("run_tool needs a place or a workdir")
            workdir.mkdir(parents=True, exist_ok=True)
            place = HostPlace(workdir)
        if name == "bash":
            return await _bash(place, params, limits)
        if name in _FILE_TOOLS:
            return await _file_tool(name, place, params, limits)
        if name in ("web_fetch", "web_search"):
            return ToolOutcome(f"{name} is not available on this server", is_error=True)
        return ToolOutcome(f"unknown tool {name!r}", is_error=True)
    except _ToolError as exc:
        return ToolOutcome(str(exc), is_error=True)
    except OSError as exc:
        return ToolOutcome(f"{name} failed: {exc.strerror or exc}", is_error=True)
    except Exception as exc:
        # A bug or an input nobody foresaw: the model gets an error result, the operator
        # the traceback, and the engine's step goes on (it used to fail and loop).
        log.exception("tool %s failed", name)
        return ToolOutcome(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)
