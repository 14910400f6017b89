"""Loop disks over sparse files for the root tests; everything is removed, also on failure."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka.disk import LoopDevice, unmount_tree
from ka.run import run


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Factory: loop_disk(size_bytes, sector_size=None) -> /dev/loopN over a sparse file."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(size: int, sector_size: int | None = None) -> str:
            nonlocal count
            count += 1
            image = tmp_path / f"disk{count}.img"
            with open(image, "wb") as f:
                f.truncate(size)
            loop = stack.enter_context(LoopDevice(image, sector_size=sector_size))
            return loop.device

        try:
            yield make
        finally:
            # Mounts first (they keep the loop devices busy), then the ExitStack detaches.
            unmount_tree(str(tmp_path))


def sfdisk_json(device: str) -> dict:  # type: ignore[type-arg]
    result = run(["sfdisk", "--json", device], check=False)
    if result.returncode != 0:
        return {}
    return json.loads(result.stdout)["partitiontable"]


def kernel_supports(fs: str) -> bool:
    return any(
        line.split()[-1] == fs
        for line in Path("/proc/filesystems").read_text().splitlines()
        if line.strip()
    ) or os.path.isdir(f"/sys/fs/{fs}")


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any external command fail the test: pure code must not run one."""
    import subprocess

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"pure code ran a command: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
