"""The agent toolset's file tools (`read`, `write`, `edit`, `glob`, `grep`), run as a child
process: inside the session's sandbox when there is one, never in the server.

In the sandbox, a tool acts with the sandbox's uid on the only files it shows (the
session's directory), so a model's path cannot reach the server's files whatever it
resolves to; a model's regular expression can backtrack for minutes (`^(a+)+$`) while
holding the GIL, and here the worst it does is get killed by the toolset's timeout. The
server starts this file by path with `python -I -S` (no site, no sessiond import: it
starts in ~15 ms, and inside a sandbox sessiond is not importable), so it uses the
standard library only.

Usage: `file_worker.py ROOT` with the call as JSON on stdin: `{"tool": NAME, "input":
{...}, "max_output": CHARS, "max_matches": N}`. The result text goes to stdout; the exit
code is 0 for a result, 1 for an error result (the text says what went wrong), 2 for a
misuse of this script. Paths are resolved inside ROOT: an absolute path under ROOT is
taken as is, any other absolute path as relative to ROOT, and `..` or a link that leaves
ROOT is refused; `grep` and `glob` follow links only when they resolve inside ROOT.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import IO, Any

MAX_FILE_BYTES = 20 * 1024 * 1024
"""`grep` skips files larger than this."""


class ToolFailed(Exception):
    """A failure to report to the model as an error result."""


def _inside(root: Path, raw: Any, *, field: str = "file_path") -> Path:
    if not isinstance(raw, str) or not raw:
        raise ToolFailed(f"{field}: expected a non-empty string")
    if "\x00" in raw:
        raise ToolFailed(f"{field}: a path cannot hold a NUL character")
    candidate = Path(raw)
    if candidate.is_absolute():
        # Models often write absolute paths under the session's root; map them when they fit.
        try:
            candidate = candidate.resolve().relative_to(root)
        except ValueError:
            candidate = Path(str(candidate).lstrip("/"))
    path = (root / candidate).resolve()
    if path != root and root not in path.parents:
        raise ToolFailed(f"{field}: {raw!r} is outside the session's working directory")
    return path


def _resolves_inside(root: Path, path: Path) -> bool:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == root or root in resolved.parents


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ToolFailed(f"{field}: expected a string")
    return value


def _shown(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def read(root: Path, params: dict[str, Any], max_output: int) -> str:
    """Numbered lines of a file (`view_range` [start, end], end 0 or less: to the end);
    each line read bounded, stopping at the range's end or the output cap: a large file
    (or one endless line) costs what is shown, not its size."""
    path = _inside(root, params.get("file_path"))
    if not path.is_file():
        raise ToolFailed(f"no such file: {params.get('file_path')}")
    start, end = 1, 0
    view = params.get("view_range")
    if view is not None:
        if not (
            isinstance(view, list)
            and len(view) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in view)
        ):
            raise ToolFailed("view_range: expected [start, end]")
        start, end = max(1, view[0]), view[1]
    numbered: list[str] = []
    size = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        number = 0
        while size <= max_output and (end <= 0 or number < end):
            line = handle.readline(max_output + 1)
            if not line:
                break
            number += 1
            if not line.endswith("\n"):
                _skip_rest_of_line(handle)
            if number < start:
                continue
            numbered.append(f"{number:6}\t{line.rstrip(chr(10)).rstrip(chr(13))}")
            size += len(numbered[-1]) + 1
    return "\n".join(numbered) if numbered else "(empty file)"


def _skip_rest_of_line(handle: IO[str]) -> None:
    """Read on to the end of an overlong line without keeping it."""
    while True:
        piece = handle.readline(65536)
        if not piece or piece.endswith("\n"):
            return


def write(root: Path, params: dict[str, Any]) -> str:
    """Create or replace a file (and its folders)."""
    path = _inside(root, params.get("file_path"))
    content = _string(params.get("content"), "content")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return f"wrote {len(content.encode())} bytes to {_shown(root, path)}"


def edit(root: Path, params: dict[str, Any]) -> str:
    """Replace one unique occurrence of `old_string` (or all, with `replace_all`)."""
    path = _inside(root, params.get("file_path"))
    old = _string(params.get("old_string"), "old_string")
    new = _string(params.get("new_string"), "new_string")
    if not path.is_file():
        raise ToolFailed(f"no such file: {params.get('file_path')}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ToolFailed("edit: the file is not UTF-8 text") from None
    count = text.count(old) if old else 0
    if count == 0:
        raise ToolFailed("old_string not found in the file")
    every = bool(params.get("replace_all"))
    if count > 1 and not every:
        raise ToolFailed(f"old_string occurs {count} times; make it unique or set replace_all")
    path.write_text(text.replace(old, new) if every else text.replace(old, new, 1), "utf-8")
    return f"replaced {count if every else 1} occurrence(s)"


def _files(root: Path, base: Path) -> list[Path]:
    """Files under `base`, links followed only inside `root`, in a stable order."""
    if base.is_file():
        return [base] if _resolves_inside(root, base) else []
    found: list[Path] = []
    for directory, subdirs, names in os.walk(base, followlinks=False):
        here = Path(directory)
        subdirs[:] = sorted(d for d in subdirs if _resolves_inside(root, here / d))
        for name in sorted(names):
            path = here / name
            if _resolves_inside(root, path) and path.is_file():
                found.append(path)
    return found


def grep(root: Path, params: dict[str, Any], limit: int) -> str:
    """`path:line:text` for each matching line, at most `limit`."""
    pattern = _string(params.get("pattern"), "pattern")
    base = _inside(root, params.get("path") or ".", field="path")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolFailed(f"grep: {exc}") from None
    shown: list[str] = []
    for file in _files(root, base):
        try:
            if file.stat().st_size > MAX_FILE_BYTES:
                continue
            with open(file, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    line = line.rstrip("\n")
                    if regex.search(line):
                        shown.append(f"{_shown(root, file)}:{number}:{line}")
                        if len(shown) >= limit:
                            return "\n".join(shown)
        except (UnicodeDecodeError, OSError):
            continue
    return "\n".join(shown) if shown else "(no matches)"


def glob(root: Path, params: dict[str, Any], limit: int) -> str:
    """Paths matching a relative pattern, at most `limit`."""
    pattern = _string(params.get("pattern"), "pattern")
    if pattern.startswith("/") or ".." in Path(pattern).parts:
        raise ToolFailed("pattern: must be relative to the working directory, without '..'")
    base = _inside(root, params.get("path") or ".", field="path")
    shown: list[str] = []
    try:
        matches = sorted(base.glob(pattern))
    except (ValueError, NotImplementedError) as exc:
        raise ToolFailed(f"glob: {exc}") from None
    for path in matches:
        if _resolves_inside(root, path) and path.resolve() != root:
            shown.append(_shown(root, path))
            if len(shown) >= limit:
                break
    return "\n".join(shown) if shown else "(no matches)"


def run(root: Path, call: dict[str, Any]) -> str:
    """One call; raises ToolFailed for an error result."""
    name = call.get("tool")
    params = call.get("input")
    if not isinstance(params, dict):
        raise ToolFailed("the tool input must be an object")
    if any(isinstance(v, str) and "\x00" in v for v in params.values()):
        raise ToolFailed("an input string cannot hold a NUL character")
    max_output = int(call.get("max_output", 30_000))
    limit = int(call.get("max_matches", 500))
    if name == "read":
        return read(root, params, max_output)
    if name == "write":
        return write(root, params)
    if name == "edit":
        return edit(root, params)
    if name == "grep":
        return grep(root, params, limit)
    if name == "glob":
        return glob(root, params, limit)
    raise ToolFailed(f"unknown file tool {name!r}")


def main(argv: list[str]) -> int:
    """Run the call read from stdin against ROOT."""
    if len(argv) != 2:
        print("usage: file_worker.py ROOT < call.json", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        call = json.load(sys.stdin)
    except ValueError as exc:
        print(f"file_worker: bad call: {exc}", file=sys.stderr)
        return 2
    try:
        text = run(root, call)
    except ToolFailed as exc:
        sys.stdout.write(str(exc))
        return 1
    except OSError as exc:
        sys.stdout.write(f"{call.get('tool')} failed: {exc.strerror or exc}")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
