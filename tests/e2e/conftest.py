"""What the end-to-end tests share: a tar copy of a tree that keeps everything a clone keeps."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

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
