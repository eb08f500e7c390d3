"""The agent toolset against a real temporary directory and a real shell."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from sessiond.runtime.tools.toolset import MAX_OUTPUT_CHARS, run_tool

pytestmark = pytest.mark.anyio


async def test_write_then_read_then_edit(tmp_path: Path) -> None:
    wrote = await run_tool("write", {"file_path": "notes/a.txt", "content": "one\ntwo\n"}, tmp_path)
    assert not wrote.is_error and (tmp_path / "notes/a.txt").read_text() == "one\ntwo\n"
    read = await run_tool("read", {"file_path": "notes/a.txt", "view_range": [2, 0]}, tmp_path)
    assert read.text.split("\t") == ["     2", "two"]
    edited = await run_tool(
        "edit", {"file_path": "notes/a.txt", "old_string": "two", "new_string": "2"}, tmp_path
    )
    assert not edited.is_error and (tmp_path / "notes/a.txt").read_text() == "one\n2\n"


async def test_edit_refuses_ambiguous_or_missing_strings(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x x")
    ambiguous = await run_tool(
        "edit", {"file_path": "f", "old_string": "x", "new_string": "y"}, tmp_path
    )
    assert ambiguous.is_error and "2 times" in ambiguous.text
    every = await run_tool(
        "edit",
        {"file_path": "f", "old_string": "x", "new_string": "y", "replace_all": True},
        tmp_path,
    )
    assert not every.is_error and (tmp_path / "f").read_text() == "y y"
    missing = await run_tool(
        "edit", {"file_path": "f", "old_string": "z", "new_string": "y"}, tmp_path
    )
    assert missing.is_error


async def test_paths_cannot_leave_the_working_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    outcome = await run_tool("write", {"file_path": "../escape", "content": "x"}, work)
    assert outcome.is_error and not (tmp_path / "escape").exists()
    read = await run_tool("read", {"file_path": "/etc/passwd"}, work)
    assert read.is_error


async def test_bash_output_exit_codes_and_cwd(tmp_path: Path) -> None:
    ok = await run_tool("bash", {"command": "pwd; echo err >&2"}, tmp_path)
    assert not ok.is_error and str(tmp_path.resolve()) in ok.text and "err" in ok.text
    failed = await run_tool("bash", {"command": "exit 3"}, tmp_path)
    assert failed.is_error and "exit code 3" in failed.text


async def test_bash_timeout_kills_the_process_tree(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        outcome = await run_tool(
            "bash", {"command": "sleep 30 & sleep 30; echo never", "timeout_ms": 300}, tmp_path
        )
    assert outcome.is_error and "timed out" in outcome.text and "never" not in outcome.text


async def test_output_is_capped(tmp_path: Path) -> None:
    outcome = await run_tool("bash", {"command": "yes | head -c 200000"}, tmp_path)
    assert len(outcome.text) < MAX_OUTPUT_CHARS + 200 and "truncated" in outcome.text


async def test_glob_and_grep(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.py").write_text("import os\nprint('hi')\n")
    (tmp_path / "src/b.txt").write_text("hi there\n")
    globbed = await run_tool("glob", {"pattern": "**/*.py"}, tmp_path)
    assert globbed.text == "src/a.py"
    grepped = await run_tool("grep", {"pattern": "hi", "path": "src"}, tmp_path)
    assert grepped.text.splitlines() == ["src/a.py:2:print('hi')", "src/b.txt:1:hi there"]
    bad = await run_tool("grep", {"pattern": "("}, tmp_path)
    assert bad.is_error


async def test_unknown_and_unavailable_tools_are_error_results(tmp_path: Path) -> None:
    assert (await run_tool("web_fetch", {"url": "http://x"}, tmp_path)).is_error
    assert (await run_tool("teleport", {}, tmp_path)).is_error


async def test_bash_works_when_the_server_holds_over_a_thousand_fds(tmp_path: Path) -> None:
    """A server with 1,000 SSE clients has descriptors past select()'s FD_SETSIZE (1024);
    the command's output pipe lands there and must still be read."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        outcome = await run_tool("bash", {"command": "echo past-the-limit"}, tmp_path)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not outcome.is_error, outcome.text
    assert outcome.text.strip() == "past-the-limit"


async def test_commands_see_none_of_the_servers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIOND_API_KEY", "sk-server-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    outcome = await run_tool("bash", {"command": "printenv"}, tmp_path)
    assert not outcome.is_error
    assert "secret" not in outcome.text
    names = {line.split("=", 1)[0] for line in outcome.text.splitlines()}
    assert f"HOME={tmp_path}" in outcome.text.splitlines()
    assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "PWD", "SHLVL", "_"}


async def test_inputs_that_used_to_raise_are_error_results(tmp_path: Path) -> None:
    """Each of these raised something other than OSError, failed the engine's step, and
    the step was planned again forever."""
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    cases = [
        ("glob", {"pattern": "/etc/*"}),
        ("glob", {"pattern": "../*"}),
        ("read", {"file_path": "a\x00b"}),
        ("write", {"file_path": "a\x00b", "content": "x"}),
        ("bash", {"command": "echo \x00"}),
        ("grep", {"pattern": "x\x00"}),
        ("edit", {"file_path": "latin1.txt", "old_string": "caf", "new_string": "x"}),
        ("read", {"file_path": "latin1.txt", "view_range": [True, 2]}),
        ("bash", {"command": ["not", "a", "string"]}),
    ]
    for name, params in cases:
        outcome = await run_tool(name, params, tmp_path)
        assert outcome.is_error, (name, params, outcome.text)


async def test_a_catastrophic_regex_is_killed_and_never_stalls_the_loop(tmp_path: Path) -> None:
    from sessiond.runtime.tools.toolset import ToolLimits

    (tmp_path / "f.txt").write_text("a" * 40 + "!\n")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            outcome = await run_tool(
                "grep", {"pattern": "^(a+)+$"}, tmp_path, ToolLimits(search_timeout_s=1.0)
            )
            tg.cancel_scope.cancel()
    assert outcome.is_error and "timed out" in outcome.text
    # The loop kept running while the regex ran: ~100 ticks in 1 s (a stalled loop: ~0).
    assert ticks > 20


async def test_grep_and_glob_never_follow_a_link_out_of_the_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0\n")
    (work / "inside.txt").write_text("root here\n")
    (work / "etc").symlink_to(outside)
    (work / "passwd").symlink_to(outside / "secret.txt")
    (work / "alias.txt").symlink_to(work / "inside.txt")
    grepped = await run_tool("grep", {"pattern": "root"}, work)
    assert grepped.text.splitlines() == ["alias.txt:1:root here", "inside.txt:1:root here"]
    globbed = await run_tool("glob", {"pattern": "**/*"}, work)
    assert "secret" not in globbed.text and "passwd" not in globbed.text.splitlines()
    assert (await run_tool("read", {"file_path": "passwd"}, work)).is_error
    assert (await run_tool("grep", {"pattern": "root", "path": "etc"}, work)).is_error


async def test_read_of_a_large_file_reads_only_what_it_shows(tmp_path: Path) -> None:
    import tracemalloc

    big = tmp_path / "big.log"
    with open(big, "w") as handle:
        line = "x" * 99 + "\n"
        for _ in range(400_000):  # 40 MB
            handle.write(line)
    tracemalloc.start()
    try:
        outcome = await run_tool("read", {"file_path": "big.log", "view_range": [1, 3]}, tmp_path)
        first = await run_tool("read", {"file_path": "big.log"}, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.text.splitlines()[0] == "     1\t" + "x" * 99
    assert len(outcome.text.splitlines()) == 3
    assert len(first.text) <= MAX_OUTPUT_CHARS + 200
    assert peak < 4 * 1024 * 1024, peak  # loading the file whole took 40 MB and more
