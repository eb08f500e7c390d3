"""Each session's working directory: where its tools run and its files stay.

They live under one root that is never the data directory or inside it (api/config.py
refuses that): a command's `../..` must not reach the database. A deleted session's
directory goes with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio


class Workdirs:
    """The working directories under one root, one per session id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, session_id: str) -> Path:
        """The session's directory (made by the first tool call that needs it)."""
        return self.root / session_id

    async def remove(self, session_id: str) -> None:
        """Delete the session's directory and everything in it, if it exists."""
        path = self.path(session_id)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
