"""Files through Wrenn's envd proxy: write and read (text, binary), list with
depth, watch_dir, rename, remove, exists, get_info."""

from __future__ import annotations

import hashlib
from typing import List

import pytest
from e2b import EntryInfo, FilesystemEvent, FilesystemEventType, FileType, NotFoundException

from conftest import SandboxFactory, poll


def test_write_and_read_text_and_binary(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    text = "héllo wörld ✓\nsecond line\n"
    w = sbx.files.write("/home/user/compat/hello.txt", text)
    assert w.path == "/home/user/compat/hello.txt"
    assert sbx.files.read("/home/user/compat/hello.txt") == text

    # Every byte value, several times over, and a size that is not a power of
    # two.
    data = bytes((i * 31 + (i >> 8)) % 256 for i in range(256 * 1024 + 7))
    sbx.files.write("/home/user/compat/blob.bin", data)
    back = sbx.files.read("/home/user/compat/blob.bin", format="bytes")
    assert isinstance(back, (bytes, bytearray))
    assert len(back) == len(data)
    assert bytes(back) == data, "binary round trip differs"

    out = sbx.commands.run("sha256sum /home/user/compat/blob.bin").stdout
    assert out.split(" ")[0] == hashlib.sha256(data).hexdigest(), "the guest sees the same bytes"
    assert sbx.commands.run("stat -c %U /home/user/compat/blob.bin").stdout == "user\n", "written as the default user"


def test_list_with_depth(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    root = "/home/user/tree"
    assert sbx.files.make_dir(f"{root}/a/b") is True
    assert sbx.files.make_dir(f"{root}/a/b") is False, "make_dir of an existing directory answers False"
    sbx.files.write(f"{root}/top.txt", "top")
    sbx.files.write(f"{root}/a/mid.txt", "mid")
    sbx.files.write(f"{root}/a/b/deep.txt", "deep")

    def paths(entries: List[EntryInfo]) -> List[str]:
        return sorted(e.path for e in entries)

    one = sbx.files.list(root)
    assert paths(one) == [f"{root}/a", f"{root}/top.txt"]
    by_name = {e.name: e for e in one}
    assert by_name["a"].type == FileType.DIR
    assert by_name["top.txt"].type == FileType.FILE
    assert by_name["top.txt"].size == 3

    assert paths(sbx.files.list(root, depth=2)) == [f"{root}/a", f"{root}/a/b", f"{root}/a/mid.txt", f"{root}/top.txt"]
    assert paths(sbx.files.list(root, depth=3)) == [
        f"{root}/a",
        f"{root}/a/b",
        f"{root}/a/b/deep.txt",
        f"{root}/a/mid.txt",
        f"{root}/top.txt",
    ]


def test_watch_dir(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    d = "/home/user/watched"
    sbx.files.make_dir(f"{d}/sub")

    events: List[FilesystemEvent] = []
    w = sbx.files.watch_dir(d)
    try:
        sbx.files.write(f"{d}/new.txt", "x")

        def saw(name: str, *types: FilesystemEventType) -> bool:
            events.extend(w.get_new_events())
            return any(e.name == name and e.type in types for e in events)

        poll("a create or write event for new.txt", lambda: saw("new.txt", FilesystemEventType.CREATE, FilesystemEventType.WRITE))
        sbx.files.remove(f"{d}/new.txt")
        poll("a remove event for new.txt", lambda: saw("new.txt", FilesystemEventType.REMOVE))
    finally:
        w.stop()

    deep: List[FilesystemEvent] = []
    wr = sbx.files.watch_dir(d, recursive=True)
    try:
        sbx.files.write(f"{d}/sub/deep.txt", "y")

        def saw_deep() -> bool:
            deep.extend(wr.get_new_events())
            return any(e.name == "sub/deep.txt" for e in deep)

        poll("an event for sub/deep.txt from a recursive watch", saw_deep, timeout=60)
    finally:
        wr.stop()


def test_rename_remove_exists_get_info(new_sandbox: SandboxFactory) -> None:
    sbx = new_sandbox()
    a = "/home/user/ops/a.txt"
    b = "/home/user/ops/b.txt"
    sbx.files.write(a, "abc")

    info = sbx.files.get_info(a)
    assert (info.name, info.path, info.type, info.size) == ("a.txt", a, FileType.FILE, 3)
    assert sbx.files.get_info("/home/user/ops").type == FileType.DIR

    assert sbx.files.exists(a) is True
    moved = sbx.files.rename(a, b)
    assert moved.path == b
    assert sbx.files.exists(a) is False
    assert sbx.files.exists(b) is True
    assert sbx.files.read(b) == "abc"

    sbx.files.remove(b)
    assert sbx.files.exists(b) is False
    with pytest.raises(NotFoundException):
        sbx.files.read(b)
    with pytest.raises(NotFoundException):
        sbx.files.get_info(b)
    sbx.files.remove("/home/user/ops")
    assert sbx.files.exists("/home/user/ops") is False
