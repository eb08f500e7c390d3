"""The tool sandbox for tests: bubblewrap and slirp4netns, checked to work on this host.

Without them, sandbox tests skip and say what to install; `.ci/run` sets
SESSIOND_REQUIRE_SANDBOX=1, which turns that skip into a failure, so CI never skips.
"""

from __future__ import annotations

import os
import shutil

import pytest

from sessiond.runtime.sandbox.bwrap import detect


def require_sandbox() -> None:
    """Return when a sandbox starts here, else skip (a failure where it is required)."""
    missing = [name for name in ("bwrap", "slirp4netns") if shutil.which(name) is None]
    reason = f"{' and '.join(missing)} not found" if missing else detect().missing
    if reason is None:
        return
    message = f"needs bubblewrap (apt-get install bubblewrap) and slirp4netns: {reason}"
    if os.environ.get("SESSIOND_REQUIRE_SANDBOX"):
        pytest.fail(message)
    pytest.skip(message)
