"""Running one tool process: its output merged and capped, a wall-clock limit that kills
its whole tree, and (for a sandbox with its own network) the user-mode network attached
before the command starts.

A `Launch` says what to start; `runtime/sandbox/` builds the ones that go through
bubblewrap. With `slirp` set, the argv holds `{info_fd}` and `{block_fd}`, each an argument
of its own ahead of the command: bubblewrap reports the sandbox's pid on the first and waits
on the second before it runs the command, so `slirp4netns` joins the sandbox's network
namespace first and the command never runs without its network. Only those two arguments
are filled in (the first of each): the command itself, braces and all, is never touched. A
`disk_floor_bytes` watch kills the command when the filesystem holding `cwd` drops below
that much free space (a file size limit bounds one file; this bounds many).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
import weakref

import anyio
import msgspec

log = logging.getLogger("sessiond.tools")

OUTPUT_BYTES_KEPT = 120_000
"""Output kept per command (the tools cap what they show below this)."""
_DISK_CHECK_S = 0.25
_LOOPBACK_WAIT_S = 10.0


class Slirp(msgspec.Struct, frozen=True, kw_only=True):
    """A `slirp4netns` to attach to the sandbox's network namespace."""

    binary: str
    disable_host_loopback: bool = True
    prohibit: tuple[str, ...] = ()
    """Networks the sandbox must not reach (the host's own addresses, private and
    link-local ranges): `prohibit` routes added in its namespace before the command runs,
    which the command cannot remove (it has no capabilities there)."""
    nsenter: str = "/usr/bin/nsenter"
    ip: str = "/usr/sbin/ip"


class Launch(msgspec.Struct, frozen=True, kw_only=True):
    """How to start one command."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    slirp: Slirp | None = None
    disk_floor_bytes: int = 0
    """Kill the command when free space under `cwd` drops below this (0: no watch)."""


class Ran(msgspec.Struct, frozen=True):
    """What a command did."""

    output: bytes
    returncode: int | None
    timed_out: bool
    disk_full: bool = False


def _drain(
    process: subprocess.Popen[bytes], stdin: bytes | None, output: bytearray, stop: threading.Event
) -> None:
    """In a worker thread: feed stdin, read the merged output (keeping up to a cap) until
    EOF, then reap the process; `stop` ends it early (timeout or interrupt)."""
    if process.stdin is not None:
        with process.stdin:
            try:
                process.stdin.write(stdin or b"")
            except (BrokenPipeError, OSError):
                pass  # it exited without reading: its output says why
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
            if len(output) < OUTPUT_BYTES_KEPT:
                output.extend(chunk)
    while not stop.is_set():
        try:
            process.wait(timeout=0.1)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_info(fd: int) -> int:
    """The sandbox's pid from bubblewrap's `--info-fd` JSON."""
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            raise OSError("bubblewrap exited before it reported the sandbox")
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except ValueError:
            continue


def _wait_for_loopback(pid: int) -> None:
    """Wait until bubblewrap has given the sandbox's network namespace its loopback address.

    bubblewrap reports the pid before its child sets up `lo`, and slirp4netns brings `lo`
    up as it configures the namespace; a loopback brought up gets 127.0.0.1 from the kernel,
    and bubblewrap's own request for that address then fails ("loopback: Failed
    RTM_NEWADDR"), ending the sandbox before the command runs: about one `bash` call in 25
    under load did. The address shows in the namespace's `fib_trie` as soon as it is added.
    """
    trie = f"/proc/{pid}/net/fib_trie"
    deadline = time.monotonic() + _LOOPBACK_WAIT_S
    pause_s = 0.0002
    while True:
        try:
            with open(trie) as routes:
                if "127.0.0.1" in routes.read():
                    return
        except FileNotFoundError:
            raise OSError("bubblewrap exited before it set up the sandbox's network") from None
        if time.monotonic() > deadline:
            raise OSError("bubblewrap did not set up the sandbox's loopback in time")
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.01)


class _Network:
    """The slirp4netns of one command: it exits when `exit_w` closes (also when the server
    dies), and is reaped off the command's path (its tap device takes ~20 ms to go)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_w = -1

    def close(self) -> None:
        if self.exit_w >= 0:
            os.close(self.exit_w)
            self.exit_w = -1
        process, self.process = self.process, None
        if process is not None:
            threading.Thread(target=_reap, args=(process,), daemon=True).start()


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _filter_routes(slirp: Slirp, pid: int) -> None:
    """Add the `prohibit` routes in the sandbox's namespace; fail closed."""
    batch = "".join(f"route add prohibit {network}\n" for network in slirp.prohibit)
    done = subprocess.run(
        [slirp.nsenter, f"--net=/proc/{pid}/ns/net", slirp.ip, "-batch", "-"],
        input=batch.encode(),
        capture_output=True,
        env={},
        timeout=10,
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()
        raise OSError(f"could not restrict the sandbox's network: {reason}")


def _attach_slirp(slirp: Slirp, info_r: int, block_w: int, network: _Network) -> None:
    """In a worker thread: once bubblewrap has set up the sandbox's loopback, fence off
    the prohibited networks, start slirp4netns on the namespace, wait until it is
    configured, then let the command run."""
    pid = _read_info(info_r)
    _wait_for_loopback(pid)
    if slirp.prohibit:
        _filter_routes(slirp, pid)
    ready_r, ready_w = os.pipe()
    exit_r, network.exit_w = os.pipe()
    try:
        argv = [slirp.binary, "--configure", "--mtu=65520", "--ready-fd", str(ready_w)]
        argv += ["--exit-fd", str(exit_r), "--enable-sandbox", "--enable-seccomp"]
        if slirp.disable_host_loopback:
            argv.append("--disable-host-loopback")
        network.process = subprocess.Popen(
            [*argv, str(pid), "tap0"],
            # It parses the sandbox's packets outside the sandbox (as root when sessiond
            # is): it gets none of the server's environment, and confines itself
            # (--enable-sandbox, --enable-seccomp).
            env={},
            pass_fds=(ready_w, exit_r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(exit_r)
        os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("slirp4netns could not set up the sandbox's network")
    finally:
        os.close(ready_r)
    try:
        os.write(block_w, b"1")
    except BrokenPipeError:
        pass  # bubblewrap gave up on the sandbox: its output and exit code say why


def _disk_below(path: str, floor: int) -> bool:
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < floor


async def run_process(launch: Launch, timeout_s: float, stdin: bytes | None = None) -> Ran:
    """Run `launch`; past `timeout_s`, on cancellation, or when the disk runs low, its
    whole process tree is killed."""
    pass_fds: tuple[int, ...] = ()
    argv = launch.argv
    pipes: list[int] = []
    info_r = info_w = block_r = block_w = -1
    try:
        if launch.slirp is not None:
            info_r, info_w = os.pipe()
            pipes += [info_r, info_w]
            block_r, block_w = os.pipe()
            pipes += [block_r, block_w]
            pass_fds = (info_w, block_r)
            argv = list(argv)
            argv[argv.index("{info_fd}")] = str(info_w)
            argv[argv.index("{block_fd}")] = str(block_r)
        # subprocess.Popen, not the event loop's subprocess support: CPython spawns with
        # vfork, while uvloop forks, which copies the server's page tables (9 ms instead of
        # 1 ms at a 200 MB RSS, bench/engine_turn.py). Output is drained in a worker thread.
        process = subprocess.Popen(
            argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            start_new_session=True,  # its own process group, so a timeout kills the whole tree
        )
    except BaseException:
        for fd in pipes:
            os.close(fd)
        raise
    for fd in (info_w, block_r):  # the child's ends
        if fd >= 0:
            os.close(fd)
    output = bytearray()
    stop = threading.Event()
    disk_full: list[bool] = []
    network = _Network()
    try:
        with anyio.move_on_after(timeout_s) as scope:
            if launch.slirp is not None:
                await anyio.to_thread.run_sync(
                    _attach_slirp, launch.slirp, info_r, block_w, network, limiter=_tool_threads()
                )
            async with anyio.create_task_group() as tg:
                if launch.disk_floor_bytes:
                    tg.start_soon(_watch_disk, launch, tg.cancel_scope, disk_full)
                await anyio.to_thread.run_sync(
                    _drain,
                    process,
                    stdin,
                    output,
                    stop,
                    abandon_on_cancel=True,
                    limiter=_tool_threads(),
                )
                tg.cancel_scope.cancel()
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
        network.close()
        for fd in (info_r, block_w):
            if fd >= 0:
                os.close(fd)
    return Ran(bytes(output), process.returncode, timed_out, bool(disk_full))


async def _watch_disk(launch: Launch, scope: anyio.CancelScope, stopped: list[bool]) -> None:
    while True:
        await anyio.sleep(_DISK_CHECK_S)
        if _disk_below(launch.cwd, launch.disk_floor_bytes):
            log.warning("a tool command was stopped: the disk under %s is nearly full", launch.cwd)
            stopped.append(True)
            scope.cancel()
            return


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
