"""Sandbox lifecycle through the control plane: create, get_info, list,
set_timeout, metrics, kill."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import List

import pytest
from e2b import Sandbox, SandboxInfo, SandboxNotFoundException, SandboxQuery, SandboxState

from conftest import REQUEST_TIMEOUT, SANDBOX_TIMEOUT, SandboxFactory, assert_near, background, poll, run_id


def ids(items: List[SandboxInfo]) -> List[str]:
    return sorted(s.sandbox_id for s in items)


def test_create_with_metadata_and_envs(new_sandbox: SandboxFactory) -> None:
    rid = run_id()
    sbx = new_sandbox(
        metadata={"compat-id": rid, "purpose": "create"},
        envs={"COMPAT_GREETING": "hello from python", "COMPAT_SECOND": "two words"},
    )
    assert sbx.sandbox_id

    r = sbx.commands.run('printf "%s|%s|%s" "$COMPAT_GREETING" "$COMPAT_SECOND" "$(whoami)"')
    assert r.exit_code == 0
    assert r.stdout == "hello from python|two words|user", "sandbox envs reach commands, which run as 'user' by default"

    r2 = sbx.commands.run('printf %s "$COMPAT_GREETING"', envs={"COMPAT_GREETING": "per command"})
    assert r2.stdout == "per command", "a command env overrides the sandbox env"

    info = sbx.get_info()
    assert info.metadata == {"compat-suite": "python", "compat-id": rid, "purpose": "create"}


def test_get_info(new_sandbox: SandboxFactory) -> None:
    rid = run_id()
    before = time.time()
    sbx = new_sandbox(metadata={"compat-id": rid})
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.template_id
    assert info.state == SandboxState.RUNNING
    assert info.metadata["compat-id"] == rid
    assert_near(info.started_at, before, 5 * 60, "started_at")
    assert_near(info.end_at, info.started_at.timestamp() + SANDBOX_TIMEOUT, 2 * 60, "end_at (started_at + the create timeout)")
    assert info.cpu_count >= 1
    assert info.memory_mb > 0
    assert info.envd_version and info.envd_version[0].isdigit(), info.envd_version

    again = Sandbox.get_info(sbx.sandbox_id, request_timeout=REQUEST_TIMEOUT)
    assert again.sandbox_id == sbx.sandbox_id
    assert again.template_id == info.template_id


def test_list_by_metadata_and_state_in_pages(new_sandbox: SandboxFactory) -> None:
    rid = run_id()
    # A value with characters that need escaping at every level of the
    # metadata query encoding.
    note = "list & filter=yes/100%"
    a = new_sandbox(metadata={"compat-id": rid, "compat-note": note})
    b = new_sandbox(metadata={"compat-id": rid, "compat-note": note})
    want = sorted([a.sandbox_id, b.sandbox_id])

    def page(query: SandboxQuery) -> List[SandboxInfo]:
        return Sandbox.list(query=query, request_timeout=REQUEST_TIMEOUT).next_items()

    everything = page(SandboxQuery(metadata={"compat-id": rid}))
    assert ids(everything) == want
    for s in everything:
        assert s.state == SandboxState.RUNNING
        assert s.metadata["compat-note"] == note

    assert ids(page(SandboxQuery(metadata={"compat-id": rid, "compat-note": note}))) == want, "escaped metadata"
    assert page(SandboxQuery(metadata={"compat-id": rid + "-nobody"})) == []
    assert page(SandboxQuery(metadata={"compat-id": rid, "compat-note": "other"})) == [], "every pair must match"

    assert ids(page(SandboxQuery(metadata={"compat-id": rid}, state=[SandboxState.RUNNING]))) == want
    assert page(SandboxQuery(metadata={"compat-id": rid}, state=[SandboxState.PAUSED])) == []
    assert ids(page(SandboxQuery(metadata={"compat-id": rid}, state=[SandboxState.RUNNING, SandboxState.PAUSED]))) == want

    pager = Sandbox.list(query=SandboxQuery(metadata={"compat-id": rid}), limit=1)
    first = pager.next_items()
    assert len(first) == 1
    assert pager.has_next, "a next page after 1 of 2 (x-next-token)"
    second = pager.next_items()
    assert len(second) == 1
    seen = first + second
    if pager.has_next:
        seen += pager.next_items()
        assert not pager.has_next, "paging ends"
    assert ids(seen) == want


def test_set_timeout_sets_an_absolute_end(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    sbx.set_timeout(10 * 60)
    assert_near(sbx.get_info().end_at, time.time() + 10 * 60, 60, "end_at after set_timeout(10 min)")
    sbx.set_timeout(3 * 60)
    assert_near(sbx.get_info().end_at, time.time() + 3 * 60, 60, "end_at after set_timeout(3 min): shortening works")

    sbx.set_timeout(10)

    def gone() -> bool:
        try:
            Sandbox.get_info(sbx.sandbox_id)
            return False
        except SandboxNotFoundException:
            return True

    poll("the sandbox to end at its timeout", gone, timeout=180, interval=1)


def test_metrics(new_sandbox: SandboxFactory) -> None:
    start = datetime.now(timezone.utc) - timedelta(minutes=1)
    sbx = new_sandbox()
    sbx.commands.run("dd if=/dev/zero of=/dev/null bs=1M count=64 2>/dev/null")
    metrics = poll(
        "a metrics sample",
        lambda: sbx.get_metrics(start=start, end=datetime.now(timezone.utc) + timedelta(minutes=1)),
        timeout=240,
        interval=2,
    )
    for m in metrics:
        assert_near(m.timestamp, time.time(), 10 * 60, "metric timestamp")
        assert m.timestamp.timestamp() >= start.timestamp() - 1, f"sample at {m.timestamp} before start {start}"
        assert m.cpu_count >= 1
        assert m.cpu_used_pct >= 0
        assert 0 < m.mem_used <= m.mem_total, (m.mem_used, m.mem_total)
        assert m.disk_total > 0 and 0 <= m.disk_used <= m.disk_total, (m.disk_used, m.disk_total)
    assert len(Sandbox.get_metrics(sbx.sandbox_id)) >= 1, "metrics without a range"
    past = sbx.get_metrics(
        start=datetime.now(timezone.utc) - timedelta(hours=3), end=datetime.now(timezone.utc) - timedelta(hours=2)
    )
    assert past == [], "no samples in a range before the sandbox existed"


def test_kill(new_sandbox: SandboxFactory) -> None:
    rid = run_id()
    sbx = new_sandbox(metadata={"compat-id": rid})
    running = background(sbx, "sleep 600")
    assert sbx.kill() is True
    # A command stream open at the kill ends with it, as in E2B ("killed
    # while the request was in flight"): a caller in wait() is not left
    # hanging.
    killed_at = time.monotonic()
    assert running.done.wait(30), "a command stream open at kill was still open 30 s later"
    assert running.error is not None, f"the stream of a command in a killed sandbox ended without an error: {running.result}"
    print(f"kill: the open command stream ended {time.monotonic() - killed_at:.1f} s after the kill")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    assert Sandbox.kill(sbx.sandbox_id) is False, "killing a killed sandbox answers False (404)"
    assert Sandbox.list(query=SandboxQuery(metadata={"compat-id": rid})).next_items() == []
    with pytest.raises(Exception):
        sbx.commands.run("true", request_timeout=60)
