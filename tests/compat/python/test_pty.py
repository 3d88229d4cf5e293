"""A PTY through Wrenn's envd proxy: create, send input, resize, kill."""

from __future__ import annotations

from e2b import PtySize

from conftest import SandboxFactory, collect, poll


def test_pty_create_input_resize_kill(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    term = collect(sbx.pty.create(PtySize(rows=24, cols=80), timeout=0))
    pid = term.handle.pid
    assert pid > 0

    # The typed line echoes as "pty-$((6*7))"; only the shell's answer holds 42.
    sbx.pty.send_stdin(pid, b"echo pty-$((6*7))\n")
    poll("the shell to answer through the pty", lambda: "pty-42" in term.pty())

    sbx.pty.send_stdin(pid, b"stty size\n")
    poll("the initial size 24x80", lambda: "24 80" in term.pty())

    sbx.pty.resize(pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(pid, b"stty size\n")
    poll("the new size 30x100", lambda: "30 100" in term.pty())

    assert sbx.pty.kill(pid) is True
    term.wait_end()
    assert term.error is not None, "a killed pty ends with an error"
    poll("the pty to leave the process list", lambda: all(p.pid != pid for p in sbx.commands.list()))
