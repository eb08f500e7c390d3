"""The tool sandbox end to end: the scripted model calls `bash` (or `read`) through a real
session, the command runs under bubblewrap on this host, and each test reads the
`agent.tool_result` the model got back.

The server holds a secret the sandbox must never see: its provider's API key, an
environment variable of the test process set before the server starts. The session log
holds a canary of its own (a user message), so reading the database would show it. The
host's PostgreSQL (127.0.0.1:5432, or a stand-in listener when none runs) and an HTTP
origin of the test's own on 127.0.0.1 are the loopback services a sandbox must not reach,
except the origin through a `limited` environment's proxy when both the operator and the
environment allow it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from engine_harness import collect_until_idle
from fakes.anthropic_server import create_app
from fakes.running import ThreadedServer
from fakes.scripts import Reply, Script
from harness import ADMIN_KEY, RunningServer, make_config
from sandbox_harness import require_sandbox

from sessiond.runtime.node import Node
from sessiond.runtime.providers.routing import ProviderConfig
from sessiond.runtime.sandbox.bwrap import session_uid
from sessiond.runtime.tools.toolset import ToolLimits

pytestmark = pytest.mark.slow

MODEL = "claude-sonnet-5-5"
TOOLSET = [{"type": "agent_toolset_20260401"}]
SECRET_NAME = "SESSIOND_TEST_SECRET"
SECRET = f"sk-sandbox-canary-{uuid.uuid4().hex}"
LOG_CANARY = f"log-canary-{uuid.uuid4().hex}"
ORIGIN_BODY = f"hello from the allowed origin {uuid.uuid4().hex}"
FILE_BYTES = 512 << 20
PROCESSES = 128
HEALTH_BUDGET_S = 0.1
POSTGRES = ("127.0.0.1", 5432)
# What a sandboxed command's environment may name (bash adds PWD, SHLVL and `_`).
SANDBOX_VARIABLES = {"PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR"}
SHELL_VARIABLES = {"PWD", "SHLVL", "_"}


class _Origin:
    """An HTTP server on 127.0.0.1 answering every GET with ORIGIN_BODY, counting them."""

    def __init__(self) -> None:
        origin = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.requests += 1
                body = ORIGIN_BODY.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Origin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


class Rig:
    """The running server, its fake provider's script, and the test's own origin."""

    def __init__(self, server: RunningServer, script: Script, origin: _Origin) -> None:
        self.server = server
        self.script = script
        self.origin = origin

    @property
    def node(self) -> Node:
        """The running server's runtime services."""
        services: Node = self.server.app.state.services
        return services

    @property
    def database(self) -> Path:
        return Path(self.server.config.database_url.removeprefix("sqlite:///"))

    def workdir(self, session_id: str) -> Path:
        return Path(self.server.config.workdir_root) / session_id


@contextmanager
def _postgres_listening() -> Iterator[None]:
    """The host's PostgreSQL port answers during the block: the real server when it runs,
    else a stand-in listener, so that "unreachable" means the sandbox, not an empty port."""
    try:
        socket.create_connection(POSTGRES, timeout=1).close()
    except OSError:
        with socket.create_server(POSTGRES) as stand_in:
            stand_in.listen()
            yield
        return
    yield


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    require_sandbox()
    script = Script()
    with (
        pytest.MonkeyPatch.context() as env,
        _Origin() as origin,
        ThreadedServer(create_app(script)) as fake,
        _postgres_listening(),
    ):
        env.setenv(SECRET_NAME, SECRET)
        provider = ProviderConfig(
            name="fake-anthropic",
            kind="anthropic",
            models=["claude-*"],
            base_url=fake.base_url,
            api_key_env=SECRET_NAME,
        )
        config = make_config(
            tmp_path_factory.mktemp("sandbox"),
            providers=[provider],
            egress_allow_private=(f"127.0.0.1:{origin.port}",),
            tool_limits=ToolLimits(file_bytes=FILE_BYTES, processes=PROCESSES),
        )
        running = RunningServer(config)
        running.start()
        try:
            yield Rig(running, script, origin)
        finally:
            running.stop()


@pytest.fixture
def sdk(rig: Rig) -> Iterator[anthropic.Anthropic]:
    rig.script.reset()
    with anthropic.Anthropic(base_url=rig.server.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def _environment(
    sdk: anthropic.Anthropic, networking: dict[str, Any], pip: list[str] | None = None
) -> str:
    config: dict[str, Any] = {"type": "cloud", "networking": networking}
    if pip is not None:
        config["packages"] = {"pip": pip}
    made = sdk.beta.environments.create(name="sandboxed", config=config)  # type: ignore[arg-type]
    return made.id


def _session(sdk: anthropic.Anthropic, environment_id: str) -> str:
    agent = sdk.beta.agents.create(name="sandboxed", model=MODEL, tools=TOOLSET)  # type: ignore[arg-type]
    return sdk.beta.sessions.create(agent=agent.id, environment_id=environment_id).id


def _unrestricted(sdk: anthropic.Anthropic) -> str:
    return _session(sdk, _environment(sdk, {"type": "unrestricted"}))


def _limited(sdk: anthropic.Anthropic, allowed_hosts: list[str]) -> str:
    networking = {"type": "limited", "allowed_hosts": allowed_hosts}
    return _session(sdk, _environment(sdk, networking))


def _user(text: str) -> list[dict[str, Any]]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


def _call(
    sdk: anthropic.Anthropic,
    rig: Rig,
    session_id: str,
    tool: str,
    params: dict[str, Any],
    *,
    on_event: Any = None,
    timeout_s: float = 60,
) -> tuple[Any, list[Any]]:
    """One turn in which the model makes one tool call: its `agent.tool_result` (None when
    there is none) and every event of the turn."""
    rig.script.push(Reply(tool_calls=[(tool, params)]), Reply(text="done"))
    events = collect_until_idle(
        sdk, session_id, _user(f"go {LOG_CANARY}"), timeout_s=timeout_s, on_event=on_event
    )
    result = next((e for e in events if e.type == "agent.tool_result"), None)
    return result, events


def _bash(
    sdk: anthropic.Anthropic, rig: Rig, session_id: str, command: str, **params: Any
) -> tuple[str, bool]:
    """Run `command` as the model's bash call: the text the model got, and its error flag."""
    result, events = _call(sdk, rig, session_id, "bash", {"command": command, **params})
    assert result is not None, [e.type for e in events]
    return _text(result), bool(result.is_error)


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content if block.type == "text")


def _uid_processes(uid: int) -> list[str]:
    """`pid: command` of every host process whose real uid is `uid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            command = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # it exited meanwhile
        uids = next(line for line in text.splitlines() if line.startswith("Uid:"))
        if int(uids.split()[1]) == uid:
            found.append(f"{status.parent.name}: {command.decode(errors='replace')}")
    return found


def _gone(uid: int, within_s: float = 5) -> list[str]:
    """Wait for every process of `uid` to end; what is left after `within_s`."""
    deadline = time.monotonic() + within_s
    while (left := _uid_processes(uid)) and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    return left


def _sleep_300_processes() -> list[str]:
    """Host processes running `sleep 300`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == b"sleep\x00300\x00":
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def _children_named(parent: int, name: str) -> list[int]:
    """Pids of `parent`'s children whose command is `name`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, _, rest = text.partition("(")[2].rpartition(")")
        if command == name and int(rest.split()[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _host_address() -> str | None:
    """A non-loopback IPv4 address of this host, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


@contextmanager
def _health_polled(base_url: str) -> Iterator[list[float]]:
    """Poll `GET /health` from another thread during the block; yields the latencies (s)."""
    latencies: list[float] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def poll() -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=10) as client:
                client.get("/health")  # connect before measuring
                while not stop.is_set():
                    started = time.perf_counter()
                    assert client.get("/health").json() == {"ok": True}
                    latencies.append(time.perf_counter() - started)
                    stop.wait(0.01)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not failures, failures


def _assert_health_fast(latencies: list[float]) -> None:
    shown = [f"{s * 1000:.1f}" for s in latencies]
    assert len(latencies) >= 5, f"too few /health samples to judge: {shown} ms"
    assert max(latencies) < HEALTH_BUDGET_S, f"/health latencies (ms): {shown}"


def _assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert SECRET_NAME not in text
    assert LOG_CANARY not in text


def test_host_files_are_out_of_reach(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """The database (by its host path, WAL included), the directories above the workspace,
    pid 1's environment and root's `.ssh` show nothing of the host."""
    session_id = _unrestricted(sdk)
    database = rig.database
    text, is_error = _bash(sdk, rig, session_id, f"cat {database} {database}-wal")
    on_host = b"".join(p.read_bytes() for p in database.parent.glob(f"{database.name}*"))
    assert LOG_CANARY.encode() in on_host  # so reading the file would show it
    assert is_error and "No such file or directory" in text
    assert "SQLite format 3" not in text
    _assert_no_secret(text)

    result, _ = _call(sdk, rig, session_id, "read", {"file_path": str(database)})
    assert result is not None and result.is_error
    assert "SQLite format 3" not in _text(result)
    _assert_no_secret(_text(result))

    text, is_error = _bash(sdk, rig, session_id, "ls -a ../../")
    listed = set(text.split())
    assert not is_error and "workspace" in listed and "usr" in listed, text
    host_siblings = {p.name for p in Path(rig.server.config.workdir_root).parent.iterdir()}
    host_siblings |= {p.name for p in Path(rig.server.config.workdir_root).iterdir()}
    assert {"data", "work"} <= host_siblings
    assert not listed & (host_siblings - {"workspace"}), text

    text, _ = _bash(
        sdk,
        rig,
        session_id,
        "cat /proc/1/environ | tr '\\0' '\\n'; ls -la ~/.ssh /root/.ssh; echo checked",
    )
    assert "checked" in text
    _assert_no_secret(text)
    assert "id_rsa" not in text and "authorized_keys" not in text


def test_env_holds_no_server_secret(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """A command's environment is the sandbox's own: none of the server's variables."""
    assert os.environ[SECRET_NAME] == SECRET  # the server process has it
    text, is_error = _bash(sdk, rig, _unrestricted(sdk), "env")
    assert not is_error, text
    _assert_no_secret(text)
    names = {line.partition("=")[0] for line in text.splitlines() if "=" in line}
    assert SANDBOX_VARIABLES <= names <= SANDBOX_VARIABLES | SHELL_VARIABLES, sorted(names)


def test_a_command_with_braces_reaches_bash_unchanged(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """With slirp4netns, the launcher fills in bubblewrap's fd arguments: a command's own
    braces (functions, `${...}`, brace expansion, the placeholders' very words) stay as
    written. (They once went through `str.format` and every such command failed.)"""
    command = "f(){ echo \"${HOME}\" {a,b}; }; f; echo '{info_fd} {block_fd} {}'"
    text, is_error = _bash(sdk, rig, _unrestricted(sdk), command)
    assert not is_error, text
    assert text == "/workspace a b\n{info_fd} {block_fd} {}\n"


def test_concurrent_networked_calls_all_start(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """Many sandboxes with slirp4netns starting at once all run their command, and no
    slirp4netns outlives its call. (slirp4netns once raced bubblewrap's loopback set-up:
    about one call in 25 died with "loopback: Failed RTM_NEWADDR" or a broken pipe before
    the command ran, and the broken pipe left its slirp4netns running for good.)"""

    def answer(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        if any(block.get("type") == "tool_result" for block in last):
            return Reply(text="done")
        return Reply(tool_calls=[("bash", {"command": "echo started"})])

    sessions = [_unrestricted(sdk) for _ in range(8)]
    outcomes: list[tuple[str, bool]] = []

    def turns(session_id: str) -> None:
        for _ in range(4):
            events = collect_until_idle(sdk, session_id, _user("go"), timeout_s=60)
            result = next(e for e in events if e.type == "agent.tool_result")
            outcomes.append((_text(result), bool(result.is_error)))

    rig.script.responder = answer
    try:
        threads = [threading.Thread(target=turns, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        rig.script.responder = None
    failed = [o for o in outcomes if o != ("started\n", False)]
    assert len(outcomes) == 32 and not failed, failed
    # Each call's slirp4netns ends with it (reaped off the call's path, so within moments;
    # one whose sandbox failed used to stay behind for good).
    deadline = time.monotonic() + 10
    while _children_named(os.getpid(), "slirp4netns") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children_named(os.getpid(), "slirp4netns") == []


def test_no_process_shows_a_secret_and_no_database_is_found(
    sdk: anthropic.Anthropic, rig: Rig
) -> None:
    """Every process the sandbox can see has a clean environment, and nothing in its
    filesystem is the server's database."""
    command = (
        "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; echo; "
        "find / -name 'sessiond.db*' 2>/dev/null; echo scanned"
    )
    text, _ = _bash(sdk, rig, _unrestricted(sdk), command)
    assert "scanned" in text and "PATH=" in text, text
    _assert_no_secret(text)
    assert "sessiond.db" not in text, text


def test_host_postgres_is_unreachable(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """127.0.0.1:5432 answers on the host, and not from an unrestricted sandbox, nor from a
    limited one directly or through its proxy (even with `localhost` allowed by name)."""
    socket.create_connection(POSTGRES, timeout=2).close()
    direct = (
        "(exec 3<>/dev/tcp/127.0.0.1/5432) && echo CONNECTED; "
        "curl -sS -m 5 http://127.0.0.1:5432/; echo curl-exit=$?"
    )
    text, _ = _bash(sdk, rig, _unrestricted(sdk), direct)
    assert "CONNECTED" not in text and "Connection refused" in text, text
    assert "curl-exit=7" in text, text

    session_id = _limited(sdk, [f"127.0.0.1:{rig.origin.port}", "localhost"])
    text, _ = _bash(sdk, rig, session_id, direct)
    assert "CONNECTED" not in text and "curl-exit=7" in text, text
    proxied = (
        "curl -s -x \"$HTTP_PROXY\" --noproxy '' -w ' code=%{http_code}\\n' http://127.0.0.1:5432/;"
        "curl -s -x \"$HTTP_PROXY\" --noproxy '' -w ' code=%{http_code}\\n' http://localhost:5432/;"
        "curl -sS -p -x \"$HTTP_PROXY\" --noproxy '' http://127.0.0.1:5432/; echo tunnel=$?"
    )
    refusals = rig.node.egress.refusals()
    text, _ = _bash(sdk, rig, session_id, proxied)
    assert text.count("code=403") == 2, text
    assert "not in this environment's allowed_hosts" in text, text
    assert "a loopback address" in text, text  # localhost passed by name, refused by address
    assert "CONNECT tunnel failed, response 403" in text and "tunnel=56" in text, text
    assert rig.node.egress.refusals() == refusals + 3


def test_limited_reaches_only_allowed_hosts_through_the_proxy(
    sdk: anthropic.Anthropic, rig: Rig
) -> None:
    """The allowed origin answers through the proxy; an unlisted host or port gets the
    proxy's 403, and without the proxy nothing leaves the sandbox."""
    port = rig.origin.port
    session_id = _limited(sdk, [f"127.0.0.1:{port}"])
    before = rig.origin.requests

    text, is_error = _bash(
        sdk, rig, session_id, f"curl -sS -x \"$HTTP_PROXY\" --noproxy '' http://127.0.0.1:{port}/"
    )
    assert not is_error and text.strip() == ORIGIN_BODY, text
    assert rig.origin.requests == before + 1

    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        other_port = spare.getsockname()[1]
    refused = (
        "curl -s -x \"$HTTP_PROXY\" --noproxy '' -w ' code=%{http_code}\\n' http://example.com/;"
        "curl -s -x \"$HTTP_PROXY\" --noproxy '' -w ' code=%{http_code}\\n' "
        f"http://127.0.0.1:{other_port}/"
    )
    text, _ = _bash(sdk, rig, session_id, refused)
    assert text.count("code=403") == 2, text
    assert 'host "example.com" is not in' in text, text
    assert f"port {other_port} of host" in text, text

    plain = (
        f"curl -sS -m 5 --noproxy '*' http://127.0.0.1:{port}/; echo curl-exit=$?; "
        "(exec 3<>/dev/tcp/1.1.1.1/80) && echo CONNECTED; cat /proc/net/dev"
    )
    text, _ = _bash(sdk, rig, session_id, plain)
    assert ORIGIN_BODY not in text and "curl-exit=7" in text, text
    assert "CONNECTED" not in text and "Network is unreachable" in text, text
    assert "tap0" not in text, text
    assert rig.origin.requests == before + 1


def test_unrestricted_cannot_reach_the_host_loopback(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """slirp4netns gives the sandbox a network (tap0), but its gateway 10.0.2.2 does not
    lead to the host's loopback services: PostgreSQL and the test's origin stay out."""
    port = rig.origin.port
    before = rig.origin.requests
    command = (
        "grep -c tap0 /proc/net/dev; "
        "(exec 3<>/dev/tcp/10.0.2.2/5432) && echo CONNECTED; "
        f"curl -sS -m 5 http://10.0.2.2:{port}/; echo curl-exit=$?"
    )
    text, _ = _bash(sdk, rig, _unrestricted(sdk), command)
    assert text.startswith("1\n"), text  # the network is there, so the refusals mean something
    assert "CONNECTED" not in text and ORIGIN_BODY not in text, text
    assert "curl-exit=0" not in text, text
    assert rig.origin.requests == before


def test_slirp4netns_gets_none_of_the_server_environment(
    sdk: anthropic.Anthropic, rig: Rig
) -> None:
    """The user-mode network runs outside the sandbox and parses its packets: it holds none
    of the server's secrets either."""
    environments: list[bytes] = []

    def read_slirp_environment(event: Any) -> None:
        if event.type != "agent.tool_use":
            return
        deadline = time.monotonic() + 20
        while not environments and time.monotonic() < deadline:
            for pid in _children_named(os.getpid(), "slirp4netns"):
                try:
                    environments.append(Path(f"/proc/{pid}/environ").read_bytes())
                except OSError:
                    continue
            threading.Event().wait(0.02)

    result, _ = _call(
        sdk,
        rig,
        _unrestricted(sdk),
        "bash",
        {"command": "sleep 2; echo slept"},
        on_event=read_slirp_environment,
    )
    assert result is not None and _text(result).strip() == "slept"
    assert environments, "no slirp4netns seen while the command ran"
    assert all(SECRET.encode() not in e and SECRET_NAME.encode() not in e for e in environments)


def test_unrestricted_cannot_reach_the_host_by_its_own_address(
    sdk: anthropic.Anthropic, rig: Rig
) -> None:
    """A service the host binds to every address (0.0.0.0) is not reachable from a sandbox
    through the host's own non-loopback address, nor are private, link-local (cloud
    metadata) or shared-space addresses; the command cannot lift the fence."""
    address = _host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with socket.create_server(("0.0.0.0", 0)) as listener:
        port = listener.getsockname()[1]
        probes = [f"{address}/{port}", "169.254.169.254/80", "10.1.2.3/80", "192.168.1.1/80"]
        command = " ; ".join(
            f"(exec 3<>/dev/tcp/{probe}) 2>/dev/null && echo CONNECTED {probe} || echo refused"
            for probe in probes
        )
        command += f" ; ip route del prohibit {address}/32 2>&1 || true"
        text, _ = _bash(sdk, rig, _unrestricted(sdk), command)
    assert "CONNECTED" not in text, text
    assert text.count("refused") == len(probes), text
    assert "Operation not permitted" in text or "not found" in text, text


def test_a_fork_bomb_is_stopped_and_the_server_stays_responsive(
    sdk: anthropic.Anthropic, rig: Rig
) -> None:
    """The process limit stops a fork bomb, the wall clock ends it, its whole tree is gone
    after, and `/health` answers within 100 ms throughout."""
    session_id = _unrestricted(sdk)
    uid = session_uid(rig.node.sandbox, session_id)
    assert uid is not None
    # Alone, the bomb ends with its first shell (bubblewrap's pid 1 then takes the whole
    # namespace down): `sleep 60` keeps it forking until the wall clock stops it.
    command = ":(){ :|:& };:; sleep 60"
    with _health_polled(rig.server.base_url) as latencies:
        started = time.perf_counter()
        text, is_error = _bash(sdk, rig, session_id, command, timeout_ms=3000)
        took_s = time.perf_counter() - started
    assert took_s < 15, f"the call took {took_s:.1f} s"
    assert is_error, text[-500:]
    assert "Resource temporarily unavailable" in text, text[-500:]
    assert _gone(uid) == []
    _assert_health_fast(latencies)


def test_a_10gb_write_stops_at_the_file_size_limit(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """`dd` asking for 10 GiB is stopped at RLIMIT_FSIZE, the file on the host is no larger,
    and `/health` answers within 100 ms throughout."""
    session_id = _unrestricted(sdk)
    with _health_polled(rig.server.base_url) as latencies:
        text, is_error = _bash(
            sdk, rig, session_id, "dd if=/dev/zero of=big bs=1M count=10240", timeout_ms=60_000
        )
    # SIGXFSZ: bash reports it for a child, or dd (exec'd by bash) dies of it: 128 + 25.
    assert is_error and ("File size limit exceeded" in text or "[exit code 153]" in text), text
    size = (rig.workdir(session_id) / "big").stat().st_size
    assert 0 < size <= FILE_BYTES
    _assert_health_fast(latencies)


def test_an_interrupt_kills_the_whole_process_tree(sdk: anthropic.Anthropic, rig: Rig) -> None:
    """Three background `sleep 300`s run as the session's uid; an interrupt leaves no
    process of that uid, and no `sleep 300`, on the host."""
    session_id = _unrestricted(sdk)
    uid = session_uid(rig.node.sandbox, session_id)
    assert uid is not None
    assert _sleep_300_processes() == []
    seen_running: list[list[str]] = []

    def interrupt_once_sleeping(event: Any) -> None:
        if event.type != "agent.tool_use" or seen_running:
            return
        # Wait until the command really runs, so the interrupt has a tree to kill.
        deadline = time.monotonic() + 20
        while len(_sleep_300_processes()) < 3 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
        seen_running.append(_uid_processes(uid))
        sdk.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])

    _, events = _call(
        sdk,
        rig,
        session_id,
        "bash",
        {"command": "sleep 300 & sleep 300 & sleep 300"},
        on_event=interrupt_once_sleeping,
    )
    assert seen_running and sum(p.endswith(": sleep 300 ") for p in seen_running[0]) == 3, (
        seen_running
    )
    assert events[-1].type == "session.status_idle"
    assert _gone(uid) == []
    assert _sleep_300_processes() == []


def _probe_wheel(directory: Path) -> None:
    """A pure-Python wheel of `sessiond-probe-pkg` 1.0 (module `sessiond_probe_pkg`)."""
    dist_info = "sessiond_probe_pkg-1.0.dist-info"
    files = {
        "sessiond_probe_pkg/__init__.py": "VALUE = 42\n",
        f"{dist_info}/METADATA": (
            "Metadata-Version: 2.1\nName: sessiond-probe-pkg\nVersion: 1.0\n"
        ),
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{name},sha256={encoded},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(directory / "sessiond_probe_pkg-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def test_a_pip_package_is_installed_once_and_importable(
    sdk: anthropic.Anthropic, rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three sessions on one environment import its pip package inside the sandbox; the
    server installed it once, and only the first session's log shows the install."""
    _probe_wheel(tmp_path)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    environment_id = _environment(sdk, {"type": "unrestricted"}, pip=["sessiond-probe-pkg"])
    installs = rig.node.package_layers.installs
    command = 'python3 -c "import sessiond_probe_pkg; print(sessiond_probe_pkg.VALUE)"'
    sessions = [_session(sdk, environment_id) for _ in range(3)]
    for session_id in sessions:
        text, is_error = _bash(sdk, rig, session_id, command, timeout_ms=60_000)
        assert not is_error and text.strip() == "42", text
    assert rig.node.package_layers.installs == installs + 1
    notes = []
    for session_id in sessions:
        logged = list(sdk.beta.sessions.events.list(session_id))
        notes.append([e.error for e in logged if e.type == "session.error"])
    assert [len(n) for n in notes] == [1, 0, 0], notes
    note = notes[0][0]
    assert note.type == "unknown_error" and note.retry_status.type == "retrying"
    assert "installing the environment's packages (sessiond-probe-pkg)" in note.message


def test_a_failed_install_ends_the_turn_with_the_reason_in_the_log(
    sdk: anthropic.Anthropic, rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package pip cannot find: the turn ends `retries_exhausted` with a `session.error`
    carrying pip's own words, no tool ran, and nothing half-built is left as a layer."""
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty directory
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    environment_id = _environment(sdk, {"type": "unrestricted"}, pip=["sessiond-not-a-package"])
    session_id = _session(sdk, environment_id)
    rig.script.push(Reply(tool_calls=[("bash", {"command": "echo should-not-run"})]))
    events = collect_until_idle(sdk, session_id, _user("go"), timeout_s=120)
    assert events[-1].type == "session.status_idle"
    assert events[-1].stop_reason.type == "retries_exhausted"
    errors = [e.error for e in events if e.type == "session.error"]
    assert [e.retry_status.type for e in errors] == ["retrying", "exhausted"], errors
    assert "installing the environment's packages failed" in errors[-1].message
    assert "sessiond-not-a-package" in errors[-1].message  # pip's own words, not a shrug
    assert not any(e.type == "agent.tool_result" for e in events)
    layers = rig.node.package_layers.root
    assert not [p for p in layers.iterdir() if p.is_dir() and ".building" in p.name]
