"""What the end-to-end tests share: a tar copy of a tree that keeps everything a clone keeps,
and a check that a run leaves no loop device, namespace or mount behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka.run import run

TreeCopy = Callable[[Path, Path], None]


def copy_tree(src: Path, dst: Path) -> None:
    """Copy `src` into `dst` (made if missing) with owners, modes, xattrs, ACLs and holes."""
    dst.mkdir(exist_ok=True)
    flags = ["--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner"]
    producer = subprocess.Popen(["tar", "-C", str(src), *flags, "--sparse", "-cpf", "-", "."],
                                stdout=subprocess.PIPE)
    try:
        subprocess.run(["tar", "-C", str(dst), *flags, "-xpf", "-"], stdin=producer.stdout,
                       check=True)
    finally:
        assert producer.stdout is not None
        producer.stdout.close()
        status = producer.wait()
    assert status == 0


@pytest.fixture
def tar_copy() -> TreeCopy:
    return copy_tree


# Other runs on this machine (tests, `ka lab clone`) may make and remove their own loop devices,
# namespaces and mounts meanwhile: only what this test made counts (its paths, its labs).
LAB_NAMESPACE = re.compile(r"ka-t(\d+)[0-9a-f]{4}-")  # ka.lab.network.unique_name()


def _loops(tmp: Path) -> set[str]:
    return {line for line in run(["losetup", "-a"]).stdout.splitlines() if str(tmp) in line}


def _namespaces() -> set[str]:
    """Lab namespaces made by this process or by one that has ended (the CLI's `ka`)."""
    out = set()
    for line in run(["ip", "netns", "list"]).stdout.splitlines():
        match = LAB_NAMESPACE.match(line)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or not os.path.exists(f"/proc/{pid}"):
            out.add(line)
    return out


def _mounts(tmp: Path) -> set[str]:
    return {line for line in Path("/proc/self/mounts").read_text().splitlines()
            if str(tmp) in line}


@contextlib.contextmanager
def _leak_check(base: Path) -> Iterator[Path]:
    before = (_loops(base), _namespaces(), _mounts(base))
    yield base / "work"
    after = (_loops(base), _namespaces(), _mounts(base))
    assert after[0] <= before[0], f"loop devices left: {after[0] - before[0]}"
    assert after[1] <= before[1], f"namespaces left: {after[1] - before[1]}"
    assert after[2] <= before[2], f"mounts left: {after[2] - before[2]}"
    assert not (base / "work").exists()


@pytest.fixture
def leaves_nothing(tmp_path: Path) -> Iterator[Path]:
    """Every loop device, namespace and mount the run made is gone at its end."""
    with _leak_check(tmp_path) as work:
        yield work


@pytest.fixture
def leaves_nothing_open() -> Iterator[Path]:
    """`leaves_nothing` in a directory other users may enter (dnsmasq serves TFTP from it
    after dropping root; pytest's own temporary directories are closed to them)."""
    base = Path(tempfile.mkdtemp(prefix="ka-e2e-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        with _leak_check(base) as work:
            yield work
    finally:
        shutil.rmtree(base, ignore_errors=True)
