"""Deterministic crash points, for tests of crash safety on a real server process.

`SESSIOND_CRASH_AT=<point>` in a server's environment makes it kill itself with SIGKILL,
as `kill -9` would, when it reaches that point; unset (always, outside such tests), a
point costs one string comparison. Points: `input_committed` (a client's events are
committed, the engine has not been told).
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("SESSIOND_CRASH_AT", "")


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup, if the environment names this point."""
    if _AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
