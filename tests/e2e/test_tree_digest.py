"""The golden tree builder and the tree digest/diff, on temporary directories.

Most of these need no root; the ones that make device nodes, foreign owners and file
capabilities are marked `root`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ka.lab.golden import IDENTITY_FILES, GoldenSpec, build_tree
from ka.lab.verify import compare, digest_tree

MiB = 1024 * 1024
SMALL = GoldenSpec(data_bytes=4 * MiB, small_files=200, sparse_apparent=8 * MiB, privileged=False)


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    build_tree(tmp_path / "golden", SMALL)
    return tmp_path / "golden"


@pytest.fixture
def copy(golden: Path, tmp_path: Path, tar_copy: Callable[[Path, Path], None]) -> Path:
    tar_copy(golden, tmp_path / "copy")
    return tmp_path / "copy"


def test_tree_holds_every_unprivileged_kind(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "t", SMALL)
    assert {"small-files", "sparse", "hardlink", "symlink", "symlink-dangling", "xattr", "acl",
            "setuid", "setgid", "sticky", "non-ascii", "empty-dir", "identity"} <= tree.kinds
    d = digest_tree(tree.root)
    e = d.entries
    assert e["usr/bin/su"].mode == 0o4755
    assert e["tmp"].mode == 0o1777
    assert e["usr/bin/python3"].links == ("usr/bin/python3", "usr/bin/python3.11")
    assert e["etc/dangling"].kind == "symlink" and e["etc/dangling"].target == "/nonexistent/target"
    assert e["var/lib/sparse.img"].sparse and e["var/lib/sparse.img"].size == 8 * MiB
    assert any(n == "system.posix_acl_access" for n, _ in e["srv/shared/acl-file"].xattrs)
    assert any(n == "system.posix_acl_default" for n, _ in e["srv/shared"].xattrs)
    assert ("user.comment", b"golden release file".hex()) in e["etc/os-release"].xattrs
    assert "home/user/日本語/ファイル.txt" in e
    assert e["srv/empty"].kind == "dir"
    sizes = sum(x.size for x in e.values() if x.kind == "file" and not x.sparse)
    assert tree.data_bytes >= 4 * MiB
    assert 3 * MiB <= sizes <= 6 * MiB


def test_two_builds_are_identical(tmp_path: Path) -> None:
    a = digest_tree(build_tree(tmp_path / "a", SMALL).root)
    b = digest_tree(build_tree(tmp_path / "b", SMALL).root)
    diff = compare(a, b, mtime=True)
    assert diff.ok, diff.describe()
    assert diff.compared == len(a.entries) > 200
    assert a.summary() == b.summary()


def test_tar_round_trip_is_exact(golden: Path, copy: Path) -> None:
    diff = compare(digest_tree(golden), digest_tree(copy), mtime=True)
    assert diff.ok, diff.describe()


def _only(diff_text: str, diff_paths: set[str], path: str, what: str) -> None:
    assert diff_paths == {path}, diff_text
    assert what in diff_text


@pytest.mark.parametrize(
    "path, mutate, what",
    [
        ("usr/share/doc/pkg001/file03.txt", lambda p: p.write_bytes(p.read_bytes()[:-1] + b"!"),
         "digest"),
        ("usr/bin/su", lambda p: os.chmod(p, 0o755), "mode"),
        ("etc/os-release", lambda p: os.removexattr(p, "user.comment"), "xattrs"),
        ("srv/shared/acl-file", lambda p: subprocess.run(["setfacl", "-b", str(p)], check=True),
         "xattrs"),
        ("usr/lib/doc-link", lambda p: (p.unlink(), p.symlink_to("../share")), "target"),
        ("etc/hostname", lambda p: p.write_text("other\n"), "size"),
        ("var/lib/sparse.img", lambda p: p.write_bytes(p.read_bytes()), "sparse"),
    ],
)
def test_a_single_change_is_reported_on_its_path(golden: Path, copy: Path, path: str,
                                                  mutate, what: str) -> None:  # type: ignore[no-untyped-def]
    mutate(copy / path)
    diff = compare(digest_tree(golden), digest_tree(copy))
    assert not diff.ok
    _only(diff.describe(), {d.path for d in diff.differences}, path, what)


def test_broken_hard_link_is_reported(golden: Path, copy: Path) -> None:
    link = copy / "usr/lib/libshared.so.1.0"
    data = link.read_bytes()
    link.unlink()
    link.write_bytes(data)
    os.utime(link, (1704164645, 1704164645))
    diff = compare(digest_tree(golden), digest_tree(copy))
    assert {d.path for d in diff.differences} == {
        "usr/lib/libshared.so.1", "usr/lib/libshared.so.1.0", "opt/data/libshared-copy"}
    assert all(d.what == "links" for d in diff.differences)


def test_missing_and_extra_entries(golden: Path, copy: Path) -> None:
    shutil.rmtree(copy / "home/user/日本語")
    (copy / "srv/empty/new").write_text("x")
    diff = compare(digest_tree(golden), digest_tree(copy))
    got = {(d.path, d.what) for d in diff.differences}
    assert ("home/user/日本語", "missing") in got
    assert ("home/user/日本語/ファイル.txt", "missing") in got
    assert ("srv/empty/new", "extra") in got
    assert "only in the clone" in diff.describe()


def test_ignore_and_prune(golden: Path, copy: Path) -> None:
    for rel in IDENTITY_FILES:
        path = copy / rel
        path.chmod(path.stat().st_mode | 0o200)  # machine-id is read-only; root writes it anyway
        path.write_text("rewritten by the fix-ups\n")
    shutil.rmtree(copy / "var/log/app")
    (copy / "var/log/app").mkdir()
    shutil.copystat(golden / "var/log/app", copy / "var/log/app")
    assert not compare(digest_tree(golden), digest_tree(copy)).ok
    diff = compare(digest_tree(golden, prune=["var/log/app"]),
                   digest_tree(copy, prune=["var/log/app"]), ignore=IDENTITY_FILES)
    assert diff.ok, diff.describe()


def test_mtime_only_compared_when_asked(golden: Path, copy: Path) -> None:
    os.utime(copy / "etc/hosts", (1, 1))
    assert compare(digest_tree(golden), digest_tree(copy)).ok
    diff = compare(digest_tree(golden), digest_tree(copy), mtime=True)
    assert [(d.path, d.what) for d in diff.differences] == [("etc/hosts", "mtime")]


@pytest.mark.root
def test_privileged_kinds_round_trip_and_are_checked(
        tmp_path: Path, tar_copy: Callable[[Path, Path], None]) -> None:
    spec = GoldenSpec(data_bytes=2 * MiB, small_files=50, sparse_apparent=4 * MiB)
    tree = build_tree(tmp_path / "g", spec)
    assert {"device", "fifo", "owner", "capability"} <= tree.kinds
    tar_copy(tree.root, tmp_path / "c")
    g = digest_tree(tree.root)
    assert g.entries["dev/loop0"].kind == "block" and g.entries["dev/loop0"].rdev == (7, 0)
    assert g.entries["run/initctl"].kind == "fifo"
    assert g.entries["home/user"].uid == 4242
    assert any(n == "security.capability" for n, _ in g.entries["usr/bin/ping"].xattrs)
    assert compare(g, digest_tree(tmp_path / "c"), mtime=True).ok

    c = tmp_path / "c"
    subprocess.run(["setcap", "-r", str(c / "usr/bin/ping")], check=True)
    os.lchown(c / "srv/empty", 0, 0)
    os.unlink(c / "dev/zero")
    os.mknod(c / "dev/zero", 0o20660, os.makedev(1, 7))
    diff = compare(g, digest_tree(c))
    got = {(d.path, d.what) for d in diff.differences}
    assert got == {("usr/bin/ping", "xattrs"), ("srv/empty", "uid"), ("srv/empty", "gid"),
                   ("dev/zero", "rdev")}, diff.describe()
