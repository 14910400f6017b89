"""Initramfs and bootloader steps really run inside the clone, with /dev, /proc, /sys bound
(root only). The clone is a busybox tree whose tools record how they were called."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ka.clone.install import Installer, InstallOptions
from ka.clone.mapping import DiskAssignment
from ka.clone.plan import BootloaderRequest, ClonePlan, GoldenDisk, GoldenPartition

pytestmark = pytest.mark.root

BUSYBOX = shutil.which("busybox")
RECORDER = """#!/bin/sh
# Record the call, and what the chroot offers, for the test to read.
{{ echo "$0 $*"; test -e /proc/self/status && echo proc; test -c /dev/null && echo dev;
   test -d /sys/kernel && echo sys; }} >> /calls.log
{body}
"""


def _clone(tmp_path: Path) -> Path:
    assert BUSYBOX
    root = tmp_path / "clone"
    for d in ("bin", "usr/sbin", "boot/grub", "lib/modules/6.1.0-test", "dev", "proc", "sys"):
        (root / d).mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for tool in ("sh", "test", "echo", "cat"):
        os.symlink("busybox", root / "bin" / tool)
    tools = {
        "update-initramfs": "",
        "grub-install": "",
        "grub-mkconfig": 'echo "# generated" > "$2"',
    }
    for name, body in tools.items():
        path = root / "usr/sbin" / name
        path.write_text(RECORDER.format(body=body))
        path.chmod(0o755)
    return root


@pytest.mark.skipif(BUSYBOX is None, reason="busybox (busybox-static) is not installed")
def test_initramfs_and_grub_run_in_a_chroot(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    plan = ClonePlan(
        prefix="t", nodes=1,
        disks=(GoldenDisk("sda", "label dos\nlinux fill fs=ext4 mount=/ boot\n"),),
        partitions=(GoldenPartition("sda", 1, "ext4", "/", content="tar"),),
        streams=(), fstab="", bootloader=BootloaderRequest("grub", ("--extra",)),
    )
    inst = Installer(InstallOptions(prefix="t", target=str(root)))
    inst.assignments = (DiskAssignment("sda", "/dev/ka-test-disk", 1 << 30),)
    inst._boot(plan)
    calls = (root / "calls.log").read_text().split("\n")
    assert calls[0] == "/usr/sbin/update-initramfs -u -k all --extra"
    assert calls[1:4] == ["proc", "dev", "sys"]
    assert calls[4] == "/usr/sbin/grub-install --target=i386-pc --recheck /dev/ka-test-disk"
    assert calls[8] == "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg"
    assert (root / "boot/grub/grub.cfg").read_text() == "# generated\n"
    assert [s.result for s in inst.log.steps] == ["ok", "ok", "ok"]
    assert str(root) not in Path("/proc/self/mounts").read_text()  # binds undone
    assert not inst.log.warnings
