"""What the doctor's tests share: a PATH without one of the programs ka looks for."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ka import run
from ka.doctor import roles


@pytest.fixture
def path_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """PATH = a directory of symlinks to every program ka doctor looks for, but one; and no
    system directories searched after PATH."""

    def make(missing: str) -> None:
        tools = (set(roles.GOLDEN_TOOLS) | set(roles.NODE_TOOLS)
                 | {"ip", "mkfs.ext4", "mkswap", "mkfs.vfat", "mkfs.xfs", "mkfs.btrfs"})
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in sorted(tools - {missing}):
            real = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
            if real is None:
                missing(f"{tool} is not installed here (scripts/setup.sh installs every tool "
                        "ka doctor looks for)")
            (bin_dir / tool).symlink_to(real)
        monkeypatch.setenv("PATH", str(bin_dir))
        monkeypatch.setattr(run, "SYSTEM_DIRS", ())

    return make
