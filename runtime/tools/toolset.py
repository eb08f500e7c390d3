"""The agent toolset `agent_toolset_20260401`, executed in a per-session working directory.

Each tool takes the input shape the contract gives (`bash {command, restart?, timeout_ms?}`,
`read {file_path, view_range?}`, `write {file_path, content}`, `edit {file_path,
old_string, new_string, replace_all?}`, `glob {pattern, path?}`, `grep {pattern, path?}`)
and returns a `ToolOutcome`: text for the model and an error flag. A tool never raises
for the model's mistakes (bad path, no match, non-zero exit): those are results the model
should see. Output is capped so one tool call cannot flood the context or the log.

Paths are resolved inside the session's directory; an absolute path, `..` or a link that
leaves it is refused, and `grep` and `glob` follow links only inside it. Every failure
inside a tool, whatever it raises, comes back as an error result: a tool never fails the
engine's step.

What this isolates, and what not: commands run in a process group of their own with a
minimal environment (PATH, HOME = the session's directory, LANG; none of the server's
variables, and the server is non-dumpable, so a same-user command cannot read them from
/proc either, unless it runs as root), a wall-clock timeout that kills the whole group,
and capped output; `grep` and `glob` run in a child process under the same timeout, so a
pathological regular expression cannot stall the server. But `bash` still runs as the server's user,
with its file permissions and network: it can read whatever that user can. The sandbox
(bubblewrap, namespaces, rlimits) comes with environments.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import anyio
import msgspec

log = logging.getLogger("sessiond.tools")

MAX_OUTPUT_CHARS = 30_000
DEFAULT_BASH_TIMEOUT_S = 120.0
MAX_BASH_TIMEOUT_S = 600.0
SEARCH_TIMEOUT_S = 30.0
MAX_MATCHES = 500
TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
_SEARCH_WORKER = str(Path(__file__).with_name("search_worker.py"))
_TOOL_PATH = "/usr/local/bin:/usr/bin:/bin"


class ToolLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Time limits of tool processes (server settings)."""

    default_timeout_s: float = DEFAULT_BASH_TIMEOUT_S
    """A command's wall-clock limit when the call gives none."""
    max_timeout_s: float = MAX_BASH_TIMEOUT_S
    """The most a call's `timeout_ms` may ask for."""
    search_timeout_s: float = SEARCH_TIMEOUT_S
    """`grep` and `glob` are killed after this long."""


class ToolOutcome(msgspec.Struct, frozen=True):
    """What a tool returns to the model."""

    text: str
    is_error: bool = False


class _ToolError(Exception):
    """A failure to report to the model as an error result."""


def _cap(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    dropped = len(text) - MAX_OUTPUT_CHARS
    return text[:MAX_OUTPUT_CHARS] + f"\n[output truncated: {dropped} more characters]"


def _inside(workdir: Path, raw: Any, *, field: str = "file_path") -> Path:
    if not isinstance(raw, str) or not raw:
        raise _ToolError(f"{field}: expected a non-empty string")
    if "\x00" in raw:
        raise _ToolError(f"{field}: a path cannot hold a NUL character")
    root = workdir.resolve()
    candidate = Path(raw)
    if candidate.is_absolute():
        # Models often write absolute paths under the session's root; map them when they fit.
        try:
            candidate = candidate.resolve().relative_to(root)
        except ValueError:
            candidate = Path(str(candidate).lstrip("/"))
    path = (root / candidate).resolve()
    if path != root and root not in path.parents:
        raise _ToolError(f"{field}: {raw!r} is outside the session's working directory")
    return path


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _ToolError(f"{field}: expected a string")
    return value


def _drain(process: subprocess.Popen[bytes], output: bytearray, stop: threading.Event) -> None:
    """In a worker thread: read the merged output (keeping up to a cap) until EOF, then
    reap the process; `stop` ends it early (timeout or interrupt)."""
    assert process.stdout is not None
    with process.stdout:  # closed here, by its only reader, whichever way this ends
        fd = process.stdout.fileno()
        poller = select.poll()  # not select(): a busy server has fds past FD_SETSIZE
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while not stop.is_set():
            if not poller.poll(100):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if len(output) < MAX_OUTPUT_CHARS * 4:
                output.extend(chunk)
    while not stop.is_set():
        try:
            process.wait(timeout=0.1)
            return
        except subprocess.TimeoutExpired:
            continue


def tool_environment(workdir: Path) -> dict[str, str]:
    """The whole environment a tool process gets: nothing of the server's own (its API
    keys, its database URL) reaches a command."""
    return {
        "PATH": _TOOL_PATH,
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": str(workdir),
    }


class _Ran(msgspec.Struct, frozen=True):
    text: str
    returncode: int | None
    timed_out: bool


async def _run_process(argv: list[str], workdir: Path, timeout_s: float) -> _Ran:
    """Run `argv` in `workdir` with the tool environment, its output merged and capped;
    past `timeout_s` (or on cancellation) its whole process group is killed."""
    # subprocess.Popen, not the event loop's subprocess support: CPython spawns with vfork,
    # while uvloop forks, which copies the server's page tables (9 ms instead of 1 ms at a
    # 200 MB RSS, bench/engine_turn.py). The output is drained in a worker thread.
    process = subprocess.Popen(
        argv,
        cwd=workdir,
        env=tool_environment(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a timeout kills the whole tree
    )
    output = bytearray()
    stop = threading.Event()
    timed_out = False
    try:
        with anyio.move_on_after(timeout_s) as scope:
            await anyio.to_thread.run_sync(
                _drain, process, output, stop, abandon_on_cancel=True, limiter=_tool_threads()
            )
        timed_out = scope.cancelled_caught
    finally:
        stop.set()
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(process.wait)
    text = bytes(output).decode(errors="replace")
    return _Ran(text, process.returncode, timed_out)


async def _bash(workdir: Path, params: dict[str, Any], limits: ToolLimits) -> ToolOutcome:
    if params.get("restart"):
        return ToolOutcome("bash session restarted (each command runs in a fresh shell)")
    command = _string(params.get("command"), "command")
    if "\x00" in command:
        raise _ToolError("command: cannot hold a NUL character")
    timeout_ms = params.get("timeout_ms")
    timeout_s = limits.default_timeout_s
    if isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        timeout_s = min(timeout_ms / 1000, limits.max_timeout_s)
    ran = await _run_process(["/bin/bash", "-c", command], workdir, timeout_s)
    if ran.timed_out:
        return ToolOutcome(_cap(ran.text + f"\n[timed out after {timeout_s:g} s]"), is_error=True)
    if ran.returncode != 0:
        return ToolOutcome(_cap(ran.text + f"\n[exit code {ran.returncode}]"), is_error=True)
    return ToolOutcome(_cap(ran.text) if ran.text else "(no output)")


async def _search(
    command: str, workdir: Path, params: dict[str, Any], limits: ToolLimits
) -> ToolOutcome:
    """`grep` or `glob` in a child process (runtime/tools/search_worker.py)."""
    pattern = _string(params.get("pattern"), "pattern")
    if "\x00" in pattern:
        raise _ToolError("pattern: cannot hold a NUL character")
    if command == "glob" and (pattern.startswith("/") or ".." in Path(pattern).parts):
        raise _ToolError("pattern: must be relative to the working directory, without '..'")
    base = _inside(workdir, params.get("path") or ".", field="path")
    argv = [
        sys.executable,
        "-I",
        "-S",
        _SEARCH_WORKER,
        command,
        str(workdir.resolve()),
        str(base),
        pattern,
        str(MAX_MATCHES),
    ]
    ran = await _run_process(argv, workdir, limits.search_timeout_s)
    if ran.timed_out:
        return ToolOutcome(
            f"{command} timed out after {limits.search_timeout_s:g} s", is_error=True
        )
    if ran.returncode != 0:
        return ToolOutcome(_cap(ran.text.strip() or f"{command} failed"), is_error=True)
    return ToolOutcome(_cap(ran.text.rstrip("\n")) if ran.text else "(no matches)")


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _tool_threads() -> anyio.CapacityLimiter:
    """Threads for running commands (one pool per event loop), apart from anyio's default
    pool: long commands must not starve other thread work."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(64)
    return limiter


def _read(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    path = _inside(workdir, params.get("file_path"))
    if not path.is_file():
        raise _ToolError(f"no such file: {params.get('file_path')}")
    start, end = 1, 0
    view = params.get("view_range")
    if view is not None:
        if not (
            isinstance(view, list)
            and len(view) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in view)
        ):
            raise _ToolError("view_range: expected [start, end]")
        start, end = max(1, view[0]), view[1]
    # Line by line, each read bounded, stopping at the range's end or the output cap: a
    # large file (or one endless line) costs what is shown, not its size.
    numbered: list[str] = []
    size = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        number = 0
        while size <= MAX_OUTPUT_CHARS and (end <= 0 or number < end):
            line = handle.readline(MAX_OUTPUT_CHARS + 1)
            if not line:
                break
            number += 1
            if not line.endswith("\n"):
                _skip_rest_of_line(handle)
            if number < start:
                continue
            numbered.append(f"{number:6}\t{line.rstrip(chr(10)).rstrip(chr(13))}")
            size += len(numbered[-1]) + 1
    return ToolOutcome(_cap("\n".join(numbered)) if numbered else "(empty file)")


def _skip_rest_of_line(handle: Any) -> None:
    """Read on to the end of an overlong line without keeping it."""
    while True:
        piece = handle.readline(65536)
        if not piece or piece.endswith("\n"):
            return


def _write(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    path = _inside(workdir, params.get("file_path"))
    content = _string(params.get("content"), "content")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return ToolOutcome(
        f"wrote {len(content.encode())} bytes to {path.relative_to(workdir.resolve())}"
    )


def _edit(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    path = _inside(workdir, params.get("file_path"))
    old = _string(params.get("old_string"), "old_string")
    new = _string(params.get("new_string"), "new_string")
    if not path.is_file():
        raise _ToolError(f"no such file: {params.get('file_path')}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _ToolError("edit: the file is not UTF-8 text") from None
    count = text.count(old) if old else 0
    if count == 0:
        raise _ToolError("old_string not found in the file")
    if count > 1 and not params.get("replace_all"):
        raise _ToolError(f"old_string occurs {count} times; make it unique or set replace_all")
    path.write_text(
        text.replace(old, new) if params.get("replace_all") else text.replace(old, new, 1),
        encoding="utf-8",
    )
    return ToolOutcome(f"replaced {count if params.get('replace_all') else 1} occurrence(s)")


async def run_tool(
    name: str, params: dict[str, Any], workdir: Path, limits: ToolLimits | None = None
) -> ToolOutcome:
    """Run one toolset tool. Whatever goes wrong comes back as an error outcome."""
    limits = limits or ToolLimits()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if name == "bash":
            return await _bash(workdir, params, limits)
        if name in ("grep", "glob"):
            return await _search(name, workdir, params, limits)
        sync_tools = {"read": _read, "write": _write, "edit": _edit}
        if name in sync_tools:
            return await anyio.to_thread.run_sync(sync_tools[name], workdir, params)
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
