"""The agent toolset `agent_toolset_20260401`, executed in a per-session working directory.

Each tool takes the input shape the contract gives (`bash {command, restart?, timeout_ms?}`,
`read {file_path, view_range?}`, `write {file_path, content}`, `edit {file_path,
old_string, new_string, replace_all?}`, `glob {pattern, path?}`, `grep {pattern, path?}`)
and returns a `ToolOutcome`: text for the model and an error flag. A tool never raises
for the model's mistakes (bad path, no match, non-zero exit): those are results the model
should see. Output is capped so one tool call cannot flood the context or the log.

Paths are resolved inside the session's directory; an absolute path or `..` that leaves
it is refused. This is a guard against accidents, not a sandbox: `bash` runs with the
server's privileges (isolation is the environment's job, a later issue).
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import threading
import weakref
from pathlib import Path
from typing import Any

import anyio
import msgspec

MAX_OUTPUT_CHARS = 30_000
DEFAULT_BASH_TIMEOUT_S = 120.0
MAX_BASH_TIMEOUT_S = 600.0
MAX_MATCHES = 500
TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")


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


async def _bash(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    if params.get("restart"):
        return ToolOutcome("bash session restarted (each command runs in a fresh shell)")
    command = _string(params.get("command"), "command")
    timeout_ms = params.get("timeout_ms")
    timeout_s = DEFAULT_BASH_TIMEOUT_S
    if isinstance(timeout_ms, int) and timeout_ms > 0:
        timeout_s = min(timeout_ms / 1000, MAX_BASH_TIMEOUT_S)
    # subprocess.Popen, not the event loop's subprocess support: CPython spawns with vfork,
    # while uvloop forks, which copies the server's page tables (9 ms instead of 1 ms at a
    # 200 MB RSS, bench/engine_turn.py). The output is drained in a worker thread.
    process = subprocess.Popen(
        ["/bin/bash", "-c", command],
        cwd=workdir,
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
    if timed_out:
        return ToolOutcome(_cap(text + f"\n[timed out after {timeout_s:g} s]"), is_error=True)
    code = process.returncode
    if code != 0:
        return ToolOutcome(_cap(text + f"\n[exit code {code}]"), is_error=True)
    return ToolOutcome(_cap(text) if text else "(no output)")


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
    lines = path.read_text(errors="replace").splitlines()
    start, end = 1, len(lines)
    view = params.get("view_range")
    if view is not None:
        if not (
            isinstance(view, list) and len(view) == 2 and all(isinstance(v, int) for v in view)
        ):
            raise _ToolError("view_range: expected [start, end]")
        start = max(1, view[0])
        end = len(lines) if view[1] <= 0 else min(view[1], len(lines))
    numbered = [f"{n:6}\t{lines[n - 1]}" for n in range(start, end + 1)]
    return ToolOutcome(_cap("\n".join(numbered)) if numbered else "(empty file)")


def _write(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    path = _inside(workdir, params.get("file_path"))
    content = _string(params.get("content"), "content")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return ToolOutcome(
        f"wrote {len(content.encode())} bytes to {path.relative_to(workdir.resolve())}"
    )


def _edit(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    path = _inside(workdir, params.get("file_path"))
    old = _string(params.get("old_string"), "old_string")
    new = _string(params.get("new_string"), "new_string")
    if not path.is_file():
        raise _ToolError(f"no such file: {params.get('file_path')}")
    text = path.read_text()
    count = text.count(old) if old else 0
    if count == 0:
        raise _ToolError("old_string not found in the file")
    if count > 1 and not params.get("replace_all"):
        raise _ToolError(f"old_string occurs {count} times; make it unique or set replace_all")
    path.write_text(
        text.replace(old, new) if params.get("replace_all") else text.replace(old, new, 1)
    )
    return ToolOutcome(f"replaced {count if params.get('replace_all') else 1} occurrence(s)")


def _glob(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    pattern = _string(params.get("pattern"), "pattern")
    base = _inside(workdir, params.get("path") or ".", field="path")
    root = workdir.resolve()
    matches = sorted(
        str(p.relative_to(root)) for p in base.glob(pattern) if root in p.resolve().parents
    )
    if not matches:
        return ToolOutcome("(no matches)")
    return ToolOutcome(_cap("\n".join(matches[:MAX_MATCHES])))


def _grep(workdir: Path, params: dict[str, Any]) -> ToolOutcome:
    try:
        regex = re.compile(_string(params.get("pattern"), "pattern"))
    except re.error as exc:
        raise _ToolError(f"pattern: {exc}") from None
    base = _inside(workdir, params.get("path") or ".", field="path")
    root = workdir.resolve()
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    hits: list[str] = []
    for file in files:
        try:
            text = file.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if regex.search(line):
                hits.append(f"{file.relative_to(root)}:{number}:{line}")
                if len(hits) >= MAX_MATCHES:
                    break
    return ToolOutcome(_cap("\n".join(hits)) if hits else "(no matches)")


async def run_tool(name: str, params: dict[str, Any], workdir: Path) -> ToolOutcome:
    """Run one toolset tool; the model's mistakes come back as error outcomes."""
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if name == "bash":
            return await _bash(workdir, params)
        sync_tools = {"read": _read, "write": _write, "edit": _edit, "glob": _glob, "grep": _grep}
        if name in sync_tools:
            return await anyio.to_thread.run_sync(sync_tools[name], workdir, params)
        if name in ("web_fetch", "web_search"):
            return ToolOutcome(f"{name} is not available on this server", is_error=True)
        return ToolOutcome(f"unknown tool {name!r}", is_error=True)
    except _ToolError as exc:
        return ToolOutcome(str(exc), is_error=True)
    except OSError as exc:
        return ToolOutcome(f"{name} failed: {exc.strerror or exc}", is_error=True)
