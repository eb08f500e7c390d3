"""The local sandbox: every tool process of a `cloud` session runs under bubblewrap.

Inside, the filesystem shows the session's directory (writable, at `/workspace`), the
system's `/usr` read-only with a short list of `/etc` files (no `pip.conf`, `npmrc`,
`shadow` or anything else that can hold a credential), the environment's installed
packages read-only, and a private `/tmp`. Never sessiond's data directory, database or
configuration. The process sees its own pid, IPC, UTS and network namespaces, a fresh
`/proc`, no environment but the one built here, and these limits: address space, file
size, process count, CPU time (RLIMIT_*), a wall clock (the toolset's timeout), and nice 19
so the server stays responsive whatever runs. bubblewrap sets no-new-privileges.

When sessiond runs as root, bubblewrap runs without a user namespace and the command is
started through `setpriv` as a uid of the session's own (`uid_base` plus a hash of the
session id), with no capabilities and no supplementary groups: even a kernel bug that let
it out of its mount namespace would leave it a nobody. As another user, bubblewrap uses a
user namespace and the command keeps the server's uid (said at start-up).

Networking (see runtime/sandbox/network.py for the choice): none for the file tools; for
`bash`, `slirp4netns --disable-host-loopback` (the internet, never the host's loopback
services) or the egress proxy on a Unix socket reached through `forwarder.py`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Literal

import msgspec

from sessiond.runtime.tools.process import Launch, Slirp
from sessiond.runtime.tools.toolset import FILE_WORKER, ToolLimits

log = logging.getLogger("sessiond.sandbox")

WORKSPACE = "/workspace"
ASSETS = "/opt/sessiond"
PACKAGES = "/opt/sessiond/packages"
EGRESS_SOCKET = "/run/sessiond/egress.sock"
PROXY_PORT = 3128
UID_SPAN = 2_000_000_000
PROHIBITED_NETWORKS = (
    "0.0.0.0/8",
    "10.0.0.0/8",  # slirp4netns's own 10.0.2.0/24 is more specific and stays reachable
    "100.64.0.0/10",
    "169.254.0.0/16",  # link-local, cloud metadata services
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
"""What an `unrestricted` sandbox never reaches, besides the host's own addresses: the
private, shared, link-local, documentation, multicast and reserved IPv4 ranges."""
_FORWARDER = str(Path(__file__).with_name("forwarder.py"))
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "debian_version",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "profile",
    "protocols",
    "python3",
    "python3.11",
    "services",
    "ssl",
    "terminfo",
    "timezone",
)
_PATH = "/opt/sessiond/packages/npm/node_modules/.bin:/opt/sessiond/packages/pip/bin:" + (
    "/usr/local/bin:/usr/bin:/bin"
)


class SandboxHost(msgspec.Struct, frozen=True, kw_only=True):
    """What this host can do, found once at start-up."""

    bwrap: str | None
    """bubblewrap, when it is installed and works here."""
    slirp4netns: str | None
    as_root: bool
    """Whether sessiond runs as root (then each session gets a uid of its own)."""
    python: str
    """The interpreter the file tools run with inside the sandbox."""
    python_binds: tuple[str, ...] = ()
    """Directories bound read-only so that `python` runs inside."""
    missing: str | None = None
    """Why there is no sandbox, when there is none."""
    uid_base: int = 2_000_000_000
    route_filter: bool = False
    """Whether sessiond can fence networks off inside a sandbox's namespace (as root, with
    `nsenter` and `ip`): slirp4netns is used for `unrestricted` only then."""
    host_addresses: tuple[str, ...] = ()
    """This host's own IPv4 addresses (a sandbox reaches none of them)."""

    @property
    def available(self) -> bool:
        """Whether tools run sandboxed here."""
        return self.bwrap is not None


class Network(msgspec.Struct, frozen=True, kw_only=True):
    """How a sandbox's `bash` reaches out."""

    mode: Literal["none", "slirp", "proxy"]
    proxy_socket: str | None = None
    """The host path of the egress proxy's Unix socket (mode `proxy`)."""


def detect(*, mode: str = "auto", uid_base: int = 2_000_000_000) -> SandboxHost:
    """Find bubblewrap and slirp4netns and check that a sandbox starts here (`mode`:
    `auto`, `bwrap` (fail without it) or `off`)."""
    as_root = os.geteuid() == 0
    python, binds = _sandbox_python()
    slirp = shutil.which("slirp4netns")
    route_filter = as_root and all(
        os.access(tool, os.X_OK) for tool in ("/usr/bin/nsenter", "/usr/sbin/ip")
    )
    if mode == "off":
        return SandboxHost(
            bwrap=None,
            slirp4netns=slirp,
            as_root=as_root,
            python=python,
            python_binds=binds,
            missing="turned off (SESSIOND_SANDBOX=off)",
            uid_base=uid_base,
        )
    bwrap = shutil.which("bwrap")
    missing = None
    if bwrap is None:
        missing = "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    else:
        missing = _probe(bwrap, as_root)
    host = SandboxHost(
        bwrap=bwrap if missing is None else None,
        slirp4netns=slirp,
        as_root=as_root,
        python=python,
        python_binds=binds,
        missing=missing,
        uid_base=uid_base,
        route_filter=route_filter,
        host_addresses=_host_addresses(),
    )
    if mode == "bwrap" and missing is not None:
        raise RuntimeError(f"SESSIOND_SANDBOX=bwrap, but no sandbox can start: {missing}")
    return host


def _host_addresses() -> tuple[str, ...]:
    """This host's local IPv4 addresses but loopback (from the kernel's routing trie)."""
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return ()
    for previous, line in zip(lines, lines[1:], strict=False):
        if line.strip() == "/32 host LOCAL":
            address = previous.strip().removeprefix("|-- ")
            if not address.startswith("127."):
                found.add(address)
    return tuple(sorted(found))


def _sandbox_python() -> tuple[str, tuple[str, ...]]:
    """The system's Python 3 (under /usr, visible anyway), else this interpreter's prefix."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate, ()
    base = getattr(sys, "_base_executable", sys.executable)
    return os.path.realpath(base), (sys.base_prefix,)


def _probe(bwrap: str, as_root: bool) -> str | None:
    """None when a minimal sandbox runs `true`, else why not."""
    argv = [bwrap, *_namespaces(as_root), "--ro-bind", "/usr", "/usr", *_top_level()]
    argv += ["--proc", "/proc", "--dev", "/dev", "--", "/usr/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": "/usr/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not start: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        return f"bubblewrap cannot create namespaces here: {reason}"
    return None


def _namespaces(as_root: bool) -> list[str]:
    flags = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    flags.append("--unshare-cgroup-try")
    if not as_root:
        flags.append("--unshare-user")
    return [*flags, "--die-with-parent", "--new-session"]


def _top_level() -> list[str]:
    """`/bin`, `/lib`, …: links where the host has links (merged /usr), else read-only."""
    args: list[str] = []
    for name in _TOP_LEVEL:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _dirs(*paths: str) -> list[str]:
    """Directories made world-readable (bubblewrap makes a mount point's parents 0700)."""
    args: list[str] = []
    for path in paths:
        args += ["--perms", "0755", "--dir", path]
    return args


def session_uid(host: SandboxHost, session_id: str) -> int | None:
    """The uid the session's commands run as (None: the server's own)."""
    if not host.as_root:
        return None
    return host.uid_base + zlib.crc32(session_id.encode()) % UID_SPAN


def prepare_workdir(path: Path, uid: int | None) -> None:
    """Make the session's directory, owned by its uid (files left by an unsandboxed run
    are handed over once)."""
    path.mkdir(parents=True, exist_ok=True)
    if uid is None:
        return
    stat = path.lstat()
    if stat.st_uid == uid:
        return
    for directory, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(directory, name), uid, uid)
    os.chown(path, uid, uid)
    path.chmod(0o700)


class Assets:
    """Files the sandboxes mount: generated `/etc` entries (a passwd naming the sandbox
    user, hosts, a resolv.conf for slirp4netns's DNS), kept under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self) -> None:
        """(Re)write the generated files, readable by every sandbox uid."""
        self.root.mkdir(parents=True, exist_ok=True)
        files = {
            "hosts": "127.0.0.1 localhost\n::1 localhost\n",
            "hostname": "sandbox\n",
            "resolv.conf": "nameserver 10.0.2.3\n",
            "group": "root:x:0:\nsandbox:x:1000:\n",
        }
        for name, text in files.items():
            (self.root / name).write_text(text)
            (self.root / name).chmod(0o644)

    def passwd(self, uid: int | None) -> Path:
        """A passwd naming root and the sandbox's user."""
        number = uid if uid is not None else os.geteuid()
        path = self.root / f"passwd-{number}"
        if not path.exists():
            sandbox = f"sandbox:x:{number}:{number}::{WORKSPACE}:/bin/bash"
            text = f"root:x:0:0:root:/root:/bin/bash\n{sandbox}\n"
            path.write_text(text)
            path.chmod(0o644)
        return path


class SandboxPlace:
    """A session's sandbox, as a `Place` for the toolset."""

    def __init__(
        self,
        host: SandboxHost,
        assets: Assets,
        workdir: Path,
        *,
        uid: int | None,
        network: Network,
        layer: Path | None,
        limits: ToolLimits,
    ) -> None:
        assert host.bwrap is not None
        self._host = host
        self._bwrap = host.bwrap
        self._assets = assets
        self._workdir = workdir
        self._uid = uid
        self._network = network
        self._layer = layer
        self._limits = limits

    @property
    def root(self) -> str:
        return WORKSPACE

    @property
    def python(self) -> str:
        return self._host.python

    @property
    def file_worker(self) -> str:
        return f"{ASSETS}/file_worker.py"

    def environment(self, *, network: bool) -> dict[str, str]:
        """The command's whole environment."""
        env = {
            "PATH": _PATH,
            "HOME": WORKSPACE,
            "USER": "sandbox",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TERM": "dumb",
            "TMPDIR": "/tmp",
        }
        if self._layer is not None:
            env["PYTHONPATH"] = f"{PACKAGES}/pip"
            env["NODE_PATH"] = f"{PACKAGES}/npm/node_modules"
        if network and self._network.mode == "proxy":
            proxy = f"http://127.0.0.1:{PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[name] = proxy
            env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
        return env

    def launch(self, argv: list[str], *, network: bool, timeout_s: float) -> Launch:
        limits = self._limits
        cpu_s = int(timeout_s) + 5
        args = [
            "/usr/bin/nice",
            "-n",
            "19",
            "/usr/bin/prlimit",
            f"--as={limits.memory_bytes}",
            f"--fsize={limits.file_bytes}",
            f"--nproc={limits.processes}",
            f"--cpu={cpu_s}",
            "--core=0",
            "--",
            self._bwrap,
            *_namespaces(self._host.as_root),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--size",
            str(limits.tmp_bytes),
            "--tmpfs",
            "/tmp",
            *_dirs("/opt", ASSETS, "/run", "/run/sessiond"),
            "--ro-bind",
            "/usr",
            "/usr",
            *_top_level(),
            *self._etc(network),
            "--bind",
            str(self._workdir),
            WORKSPACE,
            "--ro-bind",
            FILE_WORKER,
            f"{ASSETS}/file_worker.py",
        ]
        for path in self._host.python_binds:
            args += ["--ro-bind", path, path]
        if self._layer is not None:
            args += ["--ro-bind", str(self._layer), PACKAGES]
        command = list(argv)
        slirp = None
        if network and self._network.mode == "slirp":
            assert self._host.slirp4netns is not None
            hosts = tuple(f"{address}/32" for address in self._host.host_addresses)
            slirp = Slirp(binary=self._host.slirp4netns, prohibit=(*PROHIBITED_NETWORKS, *hosts))
            args += ["--info-fd", "{info_fd}", "--block-fd", "{block_fd}"]
        elif network and self._network.mode == "proxy":
            assert self._network.proxy_socket is not None
            args += ["--ro-bind", self._network.proxy_socket, EGRESS_SOCKET]
            args += ["--ro-bind", _FORWARDER, f"{ASSETS}/forwarder.py"]
            forwarder = [self.python, "-I", "-S", f"{ASSETS}/forwarder.py"]
            command = [*forwarder, EGRESS_SOCKET, str(PROXY_PORT), "--", *command]
        args += ["--chdir", WORKSPACE, "--clearenv"]
        for name, value in self.environment(network=network).items():
            args += ["--setenv", name, value]
        args.append("--")
        if self._uid is not None:
            uid = str(self._uid)
            args += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            args += ["--bounding-set=-all", "--inh-caps=-all", "--"]
        return Launch(
            argv=[*args, *command],
            cwd=str(self._workdir),
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            slirp=slirp,
            disk_floor_bytes=limits.disk_floor_bytes,
        )

    def _etc(self, network: bool) -> list[str]:
        args = ["--dir", "/etc"]
        for name in _ETC:
            path = Path("/etc") / name
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        assets = self._assets.root
        args += ["--ro-bind", str(self._assets.passwd(self._uid)), "/etc/passwd"]
        for name in ("group", "hosts", "hostname"):
            args += ["--ro-bind", str(assets / name), f"/etc/{name}"]
        if network and self._network.mode == "slirp":
            args += ["--ro-bind", str(assets / "resolv.conf"), "/etc/resolv.conf"]
        return args


def isolation_warning(host: SandboxHost) -> str | None:
    """What start-up must say about isolation this host lacks (None: full isolation)."""
    if not host.available:
        return (
            f"no tool sandbox: {host.missing}. Tools of unrestricted cloud environments run "
            "on this host as the server's user, in the session's directory with a minimal "
            "environment: they can read what that user can read and reach its loopback "
            "services (a database on 127.0.0.1). Environments with limited networking or "
            "packages are refused."
        )
    lost = []
    if not host.as_root:
        lost.append("commands keep the server's uid (run sessiond as root for a uid per session)")
    if host.slirp4netns is None or not host.route_filter:
        why = (
            "slirp4netns is missing (apt-get install slirp4netns)"
            if host.slirp4netns is None
            else "fencing off private networks inside a sandbox needs root, nsenter and ip"
        )
        lost.append(
            f"{why}, so unrestricted environments reach the internet over HTTP(S) only, "
            "through the egress proxy"
        )
    if lost:
        return "tool sandbox: " + "; ".join(lost) + "."
    return None
