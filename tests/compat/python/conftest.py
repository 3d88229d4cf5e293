"""Shared fixtures for the Python compat tests.

The SDK reads E2B_API_URL, E2B_API_KEY and E2B_SANDBOX_URL from the
environment (set by tests/compat/compat_test.go); nothing here talks to
Wrenn but the SDK, except host_get, which fetches a sandbox port the way a
browser would.
"""

from __future__ import annotations

import http.client
import os
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

import pytest
from e2b import CommandHandle, CommandResult, Sandbox

# Guests run under TCG emulation here (about 20x slower than KVM): every
# bound is generous, and every wait polls rather than sleeping a fixed time.
REQUEST_TIMEOUT = 180.0
SANDBOX_TIMEOUT = 20 * 60

T = TypeVar("T")


def run_id() -> str:
    """A fresh tag for one test's metadata, so a list query finds only what
    that test made."""
    return "py-" + secrets.token_hex(6)


def poll(what: str, fn: Callable[[], Optional[T]], timeout: float = 120.0, interval: float = 0.25) -> T:
    """Call fn until it returns a truthy value, which poll returns. An
    exception from fn counts as "not yet" and is reported if time runs out."""
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() > deadline:
            suffix = f"; last error: {last!r}" if last else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{suffix}")
        time.sleep(interval)


def kill_quietly(sbx: Sandbox) -> None:
    """Kill at cleanup; a sandbox the test already killed answers False."""
    try:
        sbx.kill(request_timeout=REQUEST_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - cleanup must not mask the test's own failure
        print(f"cleanup: kill {sbx.sandbox_id}: {e!r}")


@dataclass
class Output:
    """What a command handle streamed, collected by a thread calling wait()
    (the sync SDK delivers a background command's output only to wait() or
    an iteration of the handle)."""

    handle: CommandHandle
    stdout_chunks: List[str] = field(default_factory=list)
    stderr_chunks: List[str] = field(default_factory=list)
    pty_chunks: List[bytes] = field(default_factory=list)
    result: Optional[CommandResult] = None
    error: Optional[BaseException] = None
    done: threading.Event = field(default_factory=threading.Event)

    def stdout(self) -> str:
        return "".join(self.stdout_chunks)

    def pty(self) -> str:
        return b"".join(self.pty_chunks).decode("utf-8", "replace")

    def wait_end(self, timeout: float = 120.0) -> None:
        if not self.done.wait(timeout):
            raise AssertionError(f"pid {self.handle.pid} did not end within {timeout} s")


def collect(handle: CommandHandle) -> Output:
    out = Output(handle=handle)

    def run() -> None:
        try:
            out.result = handle.wait(
                on_stdout=out.stdout_chunks.append,
                on_stderr=out.stderr_chunks.append,
                on_pty=out.pty_chunks.append,
            )
        except BaseException as e:  # noqa: BLE001 - recorded for the test to check
            out.error = e
        finally:
            out.done.set()

    threading.Thread(target=run, daemon=True).start()
    return out


def background(sbx: Sandbox, cmd: str, stdin: bool = False) -> Output:
    """Start a command that outlives the call and collect its output."""
    handle = sbx.commands.run(cmd, background=True, stdin=stdin, timeout=0, request_timeout=REQUEST_TIMEOUT)
    return collect(handle)


def host_get(host: str, path: str = "/", headers: Optional[Dict[str, str]] = None) -> tuple[int, str]:
    """GET path from host (what sandbox.get_host(port) returns) by sending the
    request to the sandbox URL Wrenn serves (E2B_SANDBOX_URL) with that Host
    header: what DNS for *.domain pointing at wrenn-cp gives."""
    base = urllib.parse.urlsplit(os.environ["E2B_SANDBOX_URL"])
    assert base.scheme == "http", f"E2B_SANDBOX_URL {base.geturl()} is not plain http"
    conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port or 80, timeout=60)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def assert_near(d: datetime, expected: float, slack: float, what: str) -> None:
    """Assert datetime d is within slack seconds of the unix time expected."""
    assert isinstance(d, datetime), f"{what}: {d!r} is not a datetime"
    off = d.timestamp() - expected
    assert abs(off) <= slack, (
        f"{what}: {d.isoformat()} is {off:.0f} s from "
        f"{datetime.fromtimestamp(expected, timezone.utc).isoformat()} (allowed ±{slack} s)"
    )


SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def new_sandbox() -> Iterator[SandboxFactory]:
    """A factory creating sandboxes from the default template ("base"),
    killed when the test ends, passed or not."""
    made: List[Sandbox] = []

    def make(template: Optional[str] = None, metadata: Optional[Dict[str, str]] = None, **kw: object) -> Sandbox:
        sbx = Sandbox.create(
            template=template,
            timeout=SANDBOX_TIMEOUT,
            metadata={"compat-suite": "python", **(metadata or {})},
            request_timeout=REQUEST_TIMEOUT,
            **kw,  # type: ignore[arg-type]
        )
        made.append(sbx)
        return sbx

    yield make
    for sbx in made:
        kill_quietly(sbx)
