"""An environment's `packages`, installed once per package list into a cached layer that
sandboxes mount read-only at `/opt/sessiond/packages`.

A layer's directory is named by a hash of what it holds (so an environment updated to a
new list gets a new layer, and environments with the same list share one), built under a
temporary name and renamed into place when complete: a crash mid-install leaves nothing
that looks done. One install per layer runs at a time in a process, and a lock file keeps
other processes on the same host from building it twice.

No package code runs at install time: pip installs wheels only (`--only-binary=:all:`).
Requirements are names with optional extras and version specifiers, never URLs, paths or
options: the install uses the operator's own index configuration (pip's config files and
`PIP_*` variables) and the tenant chooses only what to fetch from it (PyPI refuses
packages whose dependencies are URLs). What a layer holds runs only in the sandbox. npm is
not offered: it follows a package's own `git+file:` and URL dependencies.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from sessiond.runtime.resources.environments import Packages
from sessiond.store.errors import InvalidInputError

log = logging.getLogger("sessiond.packages")

INSTALL_TIMEOUT_S = 900.0
SUPPORTED = ("pip",)
_PASSED_ENV = ("HOME", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
_PASSED_PREFIXES = ("PIP_", "XDG_", "NPM_CONFIG_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class PackageInstallError(Exception):
    """An install failed; the message ends with the installer's last output lines."""


def check_packages(packages: Packages) -> None:
    """Refuse a package list this server cannot install safely (raises InvalidInputError;
    the entries themselves were checked when the environment was saved). npm is refused:
    it resolves a package's own `git+file:`, `file:` and URL dependencies as the server's
    user, outside any sandbox (a review reproduced a host repository copied into a layer)."""
    for manager in ("apt", "cargo", "gem", "go", "npm"):
        if getattr(packages, manager):
            raise InvalidInputError(
                f"config.packages.{manager}: this server installs only pip packages "
                f"(refused rather than run without them)",
                code="unenforced_config",
            )


def wanted(packages: Packages) -> bool:
    """Whether the list asks for anything."""
    return bool(packages.pip)


def layer_key(packages: Packages, python_version: str) -> str:
    """The layer's name: what it holds and what it was built for."""
    text = repr((sorted(packages.pip), sorted(packages.npm), python_version))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class PackageLayers:
    """Built layers under one root directory."""

    def __init__(self, root: Path, *, python_version: str) -> None:
        self.root = root
        self.python_version = python_version
        self._locks: dict[str, asyncio.Lock] = {}
        self.installs = 0
        """Installs this process ran (tests count them)."""

    def path(self, packages: Packages) -> Path:
        """Where the layer for `packages` is (or will be)."""
        return self.root / layer_key(packages, self.python_version)

    def ready(self, packages: Packages) -> bool:
        """Whether the layer is built."""
        return self.path(packages).is_dir()

    async def ensure(self, packages: Packages) -> Path:
        """The built layer, installing it first if needed. Raises PackageInstallError."""
        final = self.path(packages)
        if final.is_dir():
            return final
        key = final.name
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if final.is_dir():
                return final
            await anyio.to_thread.run_sync(
                self._build_locked, packages, final, abandon_on_cancel=True
            )
            self.installs += 1
            return final

    def _build_locked(self, packages: Packages, final: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{final.name}.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # another process on this host may build it
            if final.is_dir():
                return
            building = self.root / f"{final.name}.building-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            try:
                if packages.pip:
                    self._pip(packages.pip, building / "pip")
                for directory, _, files in os.walk(building):
                    os.chmod(directory, 0o755)
                    for name in files:
                        path = os.path.join(directory, name)
                        if not os.path.islink(path):
                            os.chmod(path, os.stat(path).st_mode | 0o444)
                building.chmod(0o755)
                building.rename(final)
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise

    def _pip(self, requirements: Sequence[str], target: Path) -> None:
        argv = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        argv += ["--only-binary=:all:", "--target", str(target)]
        argv += ["--python-version", self.python_version, "--no-compile", "--quiet", "--"]
        _run(argv + [r.strip() for r in requirements], "pip")


def _installer_environment() -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for name, value in os.environ.items():
        if name in _PASSED_ENV or name.upper().startswith(_PASSED_PREFIXES):
            env[name] = value
    return env


def _run(argv: list[str], manager: str) -> None:
    log.info("installing %s packages: %s", manager, " ".join(argv[argv.index("--") + 1 :]))
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=INSTALL_TIMEOUT_S,
            env=_installer_environment(),
        )
    except subprocess.TimeoutExpired:
        raise PackageInstallError(
            f"{manager} install took over {INSTALL_TIMEOUT_S:g} s and was stopped"
        ) from None
    except OSError as exc:
        raise PackageInstallError(f"{manager} could not start: {exc}") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
        tail = "\n".join(output[-15:])
        raise PackageInstallError(f"{manager} install failed (exit {done.returncode}):\n{tail}")


def python_version_of(python: str) -> str:
    """`X.Y` of the interpreter the sandbox runs (packages are built for it)."""
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            timeout=20,
            env={"PATH": "/usr/bin:/bin"},
        )
        version = done.stdout.decode().strip()
        if re.fullmatch(r"\d+\.\d+", version):
            return version
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"{sys.version_info[0]}.{sys.version_info[1]}"
