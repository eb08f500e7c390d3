"""`grep` and `glob` for the agent toolset, run as a child process, never in the server.

A model's regular expression can backtrack for minutes (`^(a+)+$`) while holding the
GIL, and a glob can walk a link into the whole filesystem: run here, under the toolset's
timeout and output cap, the worst either does is get killed. The server starts this file
by path with `python -I -S` (no site, no sessiond import: it starts in ~15 ms), so it
uses the standard library only.

Usage: `search_worker.py grep ROOT BASE PATTERN MAX` or `search_worker.py glob ROOT BASE
PATTERN MAX`. Paths print relative to ROOT, one per line (`path:line:text` for grep).
Nothing outside ROOT is read or listed: links are followed only when they resolve inside.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

MAX_FILE_BYTES = 20 * 1024 * 1024


def _inside(root: Path, path: Path) -> bool:
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return False
    return resolved == root or root in resolved.parents


def _files(root: Path, base: Path) -> list[Path]:
    """Files under `base`, links followed only inside `root`, in a stable order."""
    if base.is_file():
        return [base] if _inside(root, base) else []
    found: list[Path] = []
    for directory, subdirs, names in os.walk(base, followlinks=False):
        here = Path(directory)
        subdirs[:] = sorted(d for d in subdirs if _inside(root, here / d))
        for name in sorted(names):
            path = here / name
            if _inside(root, path) and path.is_file():
                found.append(path)
    return found


def _grep(root: Path, base: Path, pattern: str, limit: int) -> int:
    regex = re.compile(pattern)
    shown = 0
    for file in _files(root, base):
        try:
            if file.stat().st_size > MAX_FILE_BYTES:
                continue
            with open(file, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    line = line.rstrip("\n")
                    if regex.search(line):
                        print(f"{file.relative_to(root)}:{number}:{line}")
                        shown += 1
                        if shown >= limit:
                            return 0
        except (UnicodeDecodeError, OSError):
            continue
    return 0


def _glob(root: Path, base: Path, pattern: str, limit: int) -> int:
    shown = 0
    for path in sorted(base.glob(pattern)):
        if _inside(root, path) and path.resolve() != root:
            print(path.relative_to(root))
            shown += 1
            if shown >= limit:
                break
    return 0


def main(argv: list[str]) -> int:
    """Run one search; exit 2 with a message on bad arguments."""
    if len(argv) != 6 or argv[1] not in ("grep", "glob"):
        print("usage: search_worker.py grep|glob ROOT BASE PATTERN MAX", file=sys.stderr)
        return 2
    _, command, root_arg, base_arg, pattern, limit = argv
    root = Path(root_arg).resolve()
    base = Path(base_arg)
    try:
        if command == "grep":
            return _grep(root, base, pattern, int(limit))
        return _glob(root, base, pattern, int(limit))
    except (re.error, ValueError, NotImplementedError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
