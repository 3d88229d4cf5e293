"""Commands through Wrenn's envd proxy: run, streaming callbacks, background,
stdin, kill, list, connect."""

from __future__ import annotations

import re
from typing import List

import pytest
from e2b import CommandExitException

from conftest import SandboxFactory, background, collect, poll


def test_run_result_exit_code_cwd_user(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    r = sbx.commands.run("echo out; echo err >&2")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "out\n", "err\n")

    with pytest.raises(CommandExitException) as exc:
        sbx.commands.run("echo partial; echo bad >&2; exit 3")
    assert exc.value.exit_code == 3
    assert exc.value.stdout == "partial\n"
    assert exc.value.stderr == "bad\n"

    assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sbx.commands.run("whoami", user="root").stdout == "root\n"


def test_streaming_callbacks(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    out: List[str] = []
    err: List[str] = []
    r = sbx.commands.run(
        "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 1; done",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "out1\nout2\nout3\n"
    assert "".join(err) == "err1\nerr2\nerr3\n"
    assert r.stdout == "out1\nout2\nout3\n"
    assert len(out) >= 2, f"stdout came in {len(out)} callback(s) for lines a second apart: not streamed"
    assert len(err) >= 2, f"stderr came in {len(err)} callback(s): not streamed"


def test_background_list_kill_wait(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    sleeper = background(sbx, "sleep 600")
    pid = sleeper.handle.pid
    assert pid > 0
    procs = sbx.commands.list()
    match = [p for p in procs if p.pid == pid]
    assert match, f"pid {pid} not in {procs}"
    assert "sleep 600" in " ".join([match[0].cmd, *match[0].args])

    assert sbx.commands.kill(pid) is True
    sleeper.wait_end()
    assert sleeper.error is not None, f"a killed command's wait() must raise, got {sleeper.result}"
    poll("the killed process to leave the list", lambda: all(p.pid != pid for p in sbx.commands.list()))
    assert sbx.commands.kill(pid) is False, "killing a gone process answers False"

    short = sbx.commands.run("sleep 1; echo done", background=True)
    res = short.wait()
    assert (res.exit_code, res.stdout) == (0, "done\n")


def test_stdin(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    cat = background(sbx, "cat", stdin=True)
    sbx.commands.send_stdin(cat.handle.pid, "hello stdin\n")
    poll("cat to echo the first line", lambda: "hello stdin\n" in cat.stdout())
    cat.handle.send_stdin(b"second line\n")
    poll("cat to echo the second line", lambda: "second line\n" in cat.stdout())
    sbx.commands.close_stdin(cat.handle.pid)
    cat.wait_end()
    assert cat.error is None, f"cat after EOF: {cat.error!r}"
    assert cat.result is not None
    assert (cat.result.exit_code, cat.result.stdout) == (0, "hello stdin\nsecond line\n")


def test_connect_to_a_running_command(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    ticker = background(sbx, "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.5; done")
    poll("the first tick", lambda: "tick 1\n" in ticker.stdout())

    again = collect(sbx.commands.connect(ticker.handle.pid, timeout=0))
    assert again.handle.pid == ticker.handle.pid
    poll("new ticks through connect", lambda: len(re.findall(r"tick \d+\n", again.stdout())) >= 2)
    assert sbx.commands.kill(ticker.handle.pid) is True
    again.wait_end()
    assert again.error is not None, "the connected handle sees the kill"
