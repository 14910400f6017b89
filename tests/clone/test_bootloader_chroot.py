"""Initramfs and bootloader steps really run inside the clone, with /dev, /proc, /sys bound
(root only). The clone is a busybox tree whose tools record how they were called."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.clone.install import Installer, InstallOptions
from ka.clone.mapping import DiskAssignment
from ka.clone.plan import BootloaderRequest, ClonePlan, GoldenDisk, GoldenPartition
from needs import need

from .support import recording_tools

pytestmark = pytest.mark.root


def _clone(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    for d in ("boot/grub", "lib/modules/6.1.0-test", "dev", "proc", "sys"):
        (root / d).mkdir(parents=True)
    return recording_tools(root, {
        "update-initramfs": "",
        "grub-install": "",
        "grub-mkconfig": 'echo "# generated" > "$2"',
    })


def test_initramfs_and_grub_run_in_a_chroot(tmp_path: Path) -> None:
    need("busybox", "busybox-static")
    root = _clone(tmp_path)
    code = bytes(range(220)) * 2  # --mbr-file: boot code that must land after grub-install
    plan = ClonePlan(
        prefix="t", nodes=1,
        disks=(GoldenDisk("sda", "label dos\nlinux fill fs=ext4 mount=/ boot\n",
                          boot_code=code),),
        partitions=(GoldenPartition("sda", 1, "ext4", "/", content="tar"),),
        streams=(), fstab="", bootloader=BootloaderRequest("grub", ("--extra",)),
    )
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * 1024)
    inst = Installer(InstallOptions(prefix="t", target=str(root)))
    inst.assignments = (DiskAssignment("sda", str(disk), 1 << 30),)
    inst._boot(plan)
    calls = (root / "calls.log").read_text().split("\n")
    assert calls[0] == "/usr/sbin/update-initramfs -u -k all --extra"
    assert calls[1:4] == ["proc", "dev", "sys"]
    assert calls[4] == f"/usr/sbin/grub-install --target=i386-pc --recheck {disk}"
    assert calls[8] == "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg"
    assert (root / "boot/grub/grub.cfg").read_text() == "# generated\n"
    assert [(s.name, s.result) for s in inst.log.steps] == [
        ("regenerate initramfs", "ok"), ("/usr/sbin/grub-install --target=i386-pc", "ok"),
        ("grub-mkconfig", "ok"), (f"MBR boot code to {disk}", "ok")]
    # the boot code replaced GRUB's, the partition table area stayed
    assert disk.read_bytes() == code + b"\xee" * (1024 - 440)
    assert str(root) not in Path("/proc/self/mounts").read_text()  # binds undone
    assert not inst.log.warnings
