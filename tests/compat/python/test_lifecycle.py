"""What goes beyond one running VM: pause and connect with a live process,
fork, snapshots, and a port served through get_host."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List

from e2b import Sandbox, SandboxQuery, SandboxState, SnapshotInfo

from conftest import (
    REQUEST_TIMEOUT,
    SANDBOX_TIMEOUT,
    Output,
    SandboxFactory,
    background,
    collect,
    host_get,
    kill_quietly,
    poll,
    run_id,
)

# keeper holds a random secret in memory only and answers every stdin line
# with it and a line count: the same secret and a count that goes on after a
# pause proves the process's memory survived.
KEEPER = """import secrets, sys
s = secrets.token_hex(8)
print("ready", s, flush=True)
for n, line in enumerate(sys.stdin):
    print("answer", s, n, line.strip(), flush=True)
"""


@dataclass
class Keeper:
    out: Output
    secret: str

    @property
    def pid(self) -> int:
        return self.out.handle.pid


def start_keeper(sbx: Sandbox) -> Keeper:
    sbx.files.write("/home/user/keeper.py", KEEPER)
    out = background(sbx, "python3 -u /home/user/keeper.py", stdin=True)
    m = poll("keeper to start", lambda: re.search(r"ready ([0-9a-f]{16})\n", out.stdout()), timeout=180)
    return Keeper(out=out, secret=m.group(1))


def ask(sbx: Sandbox, pid: int, stdout: Callable[[], str], line: str, want: str) -> None:
    """Send a line to the keeper and wait for its answer."""
    sbx.commands.send_stdin(pid, line + "\n")
    poll(f'keeper to answer "{want}"', lambda: want + "\n" in stdout())


def all_snapshots() -> List[SnapshotInfo]:
    items: List[SnapshotInfo] = []
    pager = Sandbox.list_snapshots()
    while pager.has_next:
        items += pager.next_items()
    return items


def test_pause_then_connect_keeps_process_memory(new_sandbox: SandboxFactory) -> None:
    rid = run_id()
    sbx = new_sandbox(metadata={"compat-id": rid})
    keeper = start_keeper(sbx)
    ask(sbx, keeper.pid, keeper.out.stdout, "before", f"answer {keeper.secret} 0 before")
    sbx.files.write("/home/user/pause-marker.txt", "kept")

    assert sbx.pause(request_timeout=REQUEST_TIMEOUT) is True
    assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
    paused = Sandbox.list(query=SandboxQuery(metadata={"compat-id": rid}, state=[SandboxState.PAUSED])).next_items()
    assert [s.sandbox_id for s in paused] == [sbx.sandbox_id]
    assert Sandbox.pause(sbx.sandbox_id) is False, "pausing a paused sandbox answers False (409)"

    back = Sandbox.connect(sbx.sandbox_id, timeout=SANDBOX_TIMEOUT, request_timeout=REQUEST_TIMEOUT)
    assert back.sandbox_id == sbx.sandbox_id
    assert back.get_info().state == SandboxState.RUNNING

    procs = back.commands.list()
    assert any(p.pid == keeper.pid for p in procs), f"keeper pid {keeper.pid} gone after resume: {procs}"
    again = collect(back.commands.connect(keeper.pid, timeout=0))
    ask(back, keeper.pid, again.stdout, "after", f"answer {keeper.secret} 1 after")
    assert back.files.read("/home/user/pause-marker.txt") == "kept"

    # connect on a running sandbox is a no-op that succeeds, and the first
    # object (holding the envd access token create returned) still works.
    sbx.connect()
    assert sbx.commands.run("echo still").stdout == "still\n", "the envd access token from create works after resume"
    back.commands.kill(keeper.pid)


def test_fork_copies_files_and_running_process(new_sandbox: SandboxFactory) -> None:
    src = new_sandbox()
    keeper = start_keeper(src)
    ask(src, keeper.pid, keeper.out.stdout, "one", f"answer {keeper.secret} 0 one")
    src.files.write("/home/user/fork-me.txt", "from source")

    results = src.fork(timeout=SANDBOX_TIMEOUT, count=1, request_timeout=REQUEST_TIMEOUT)
    assert len(results) == 1
    fork = results[0]
    if isinstance(fork, Exception):
        raise fork
    try:
        assert fork.sandbox_id != src.sandbox_id
        assert fork.get_info().state == SandboxState.RUNNING
        assert fork.files.read("/home/user/fork-me.txt") == "from source"
        in_fork = collect(fork.commands.connect(keeper.pid, timeout=0))
        ask(fork, keeper.pid, in_fork.stdout, "in fork", f"answer {keeper.secret} 1 in fork")

        # The two are independent from here on.
        fork.files.write("/home/user/fork-me.txt", "changed in fork")
        assert src.files.read("/home/user/fork-me.txt") == "from source"
        # A fork may pause the source for a moment, ending its streams: listen
        # afresh.
        in_src = collect(src.commands.connect(keeper.pid, timeout=0))
        ask(src, keeper.pid, in_src.stdout, "in source", f"answer {keeper.secret} 1 in source")
    finally:
        kill_quietly(fork)


def test_snapshots_create_list_use_delete(new_sandbox: SandboxFactory) -> None:
    src = new_sandbox()
    src.files.write("/home/user/snap.txt", "in the snapshot")
    snap = src.create_snapshot(name=run_id(), request_timeout=REQUEST_TIMEOUT)
    assert snap.snapshot_id, snap
    deleted = False
    try:
        # The source goes on running.
        assert src.get_info().state == SandboxState.RUNNING
        assert src.commands.run("cat /home/user/snap.txt").stdout == "in the snapshot"
        src.files.write("/home/user/snap.txt", "after the snapshot")

        mine = src.list_snapshots().next_items()
        assert any(s.snapshot_id == snap.snapshot_id for s in mine), f"{snap.snapshot_id} not listed for its sandbox: {mine}"
        assert any(s.snapshot_id == snap.snapshot_id for s in all_snapshots()), "snapshot in the full list"

        src.kill()
        copy = Sandbox.create(snap.snapshot_id, timeout=SANDBOX_TIMEOUT, request_timeout=REQUEST_TIMEOUT)
        try:
            assert copy.files.read("/home/user/snap.txt") == "in the snapshot"
        finally:
            kill_quietly(copy)

        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
        deleted = True
        assert not any(s.snapshot_id == snap.snapshot_id for s in all_snapshots()), "deleted snapshot still listed"
        assert Sandbox.delete_snapshot(snap.snapshot_id) is False, "deleting it again answers False (404)"
    finally:
        if not deleted:
            try:
                Sandbox.delete_snapshot(snap.snapshot_id)
            except Exception as e:  # noqa: BLE001 - cleanup must not mask the test's own failure
                print(f"cleanup: delete snapshot {snap.snapshot_id}: {e!r}")


def test_get_host_serves_a_port(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    token = run_id()
    sbx.files.write("/home/user/www/index.html", token)
    server = background(sbx, "python3 -m http.server 8000 --bind 0.0.0.0 --directory /home/user/www")

    host = sbx.get_host(8000)
    assert host.startswith(f"8000-{sbx.sandbox_id}."), f"get_host(8000) = {host}"
    headers = {"e2b-traffic-access-token": sbx.traffic_access_token} if sbx.traffic_access_token else {}

    def fetch() -> str:
        status, body = host_get(host, "/index.html", headers)
        if status != 200:
            raise AssertionError(f"status {status}: {body[:300]}")
        return body

    assert poll(f"GET http://{host}/index.html", fetch, timeout=180, interval=1) == token
    status, body = host_get(host, "/nope.html", headers)
    assert status == 404
    assert "File not found" in body, "the server in the sandbox answers, not the proxy"
    sbx.commands.kill(server.handle.pid)
