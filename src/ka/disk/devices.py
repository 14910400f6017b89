"""Block devices: partition names, device nodes without udev, loop devices, mounts.

These machines may run without udev: after a partition table changes, the kernel is told with
`partx --update` and any missing /dev node is created from /sys/block/<disk>/<part>/dev.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ka.disk.errors import DiskBusy
from ka.errors import KaError
from ka.run import run

SYS_BLOCK = Path("/sys/block")


def partition_device(disk: str, number: int) -> str:
    """The device node of partition `number` of `disk` (/dev/sda1, /dev/nvme0n1p1, ...)."""
    if number < 1:
        raise ValueError(f"partition numbers start at 1, not {number}")
    if disk.startswith("/dev/disk/by-"):
        return f"{disk}-part{number}"
    # The kernel adds a "p" when the disk name ends in a digit (nvme0n1, mmcblk0, loop3, md0).
    return f"{disk}p{number}" if disk[-1:].isdigit() else f"{disk}{number}"


def disk_name(disk: str) -> str:
    """The kernel name of a disk given by any path (/dev/sda, a by-id link) -> "sda"."""
    return os.path.basename(os.path.realpath(disk))


def _sys_dir(disk: str) -> Path:
    path = SYS_BLOCK / disk_name(disk)
    if not path.is_dir():
        hint = "give a whole disk such as /dev/sda, /dev/nvme0n1 or /dev/loop0, not a partition"
        if os.path.isfile(disk):
            hint = "for an image file, attach it first: losetup --find --show --partscan FILE"
        raise KaError(f"{disk} is not a whole disk known to the kernel (no {path})", hint=hint)
    return path


def disk_size(disk: str) -> int:
    """Size of the disk in bytes (sysfs counts 512-byte units whatever the sector size)."""
    return int((_sys_dir(disk) / "size").read_text()) * 512


def sector_size(disk: str) -> int:
    return int((_sys_dir(disk) / "queue" / "logical_block_size").read_text())


def kernel_partitions(disk: str) -> dict[int, tuple[str, int, int]]:
    """Partitions the kernel knows of: number -> (name, major, minor)."""
    out: dict[int, tuple[str, int, int]] = {}
    base = _sys_dir(disk)
    for entry in base.iterdir():
        if not (entry / "partition").exists():
            continue
        number = int((entry / "partition").read_text())
        major, minor = (int(x) for x in (entry / "dev").read_text().split(":"))
        out[number] = (entry.name, major, minor)
    return out


def ensure_partition_nodes(
    disk: str, expected: set[int] | None = None, timeout: float = 5.0
) -> list[str]:
    """Make /dev nodes exist for every partition of `disk`; returns the nodes created here.

    With `expected`, waits (bounded) until the kernel knows those partition numbers, asking it
    to re-read the table with `partx --update` first: sfdisk's own re-read is not always honoured
    for loop devices on these machines.
    """
    if expected:
        real = os.path.realpath(disk)
        run(["partx", "--update", real], check=False)
        # partx --update leaves out MBR logical partitions; --add takes them one by one.
        for number in sorted(expected - set(kernel_partitions(disk))):
            run(["partx", "--add", "--nr", str(number), real], check=False)
        deadline = time.monotonic() + timeout
        while not expected <= set(kernel_partitions(disk)):
            if time.monotonic() > deadline:
                missing = sorted(expected - set(kernel_partitions(disk)))
                raise KaError(
                    f"the kernel does not show partitions {missing} of {disk} after writing the "
                    "table",
                    hint="attach loop devices with `losetup --partscan`"
                    if disk_name(disk).startswith("loop")
                    else "a partition of the disk may be in use; check `lsblk` and retry",
                )
            time.sleep(0.05)
    created: list[str] = []
    for _number, (name, major, minor) in sorted(kernel_partitions(disk).items()):
        node = Path("/dev") / name
        want = os.makedev(major, minor)
        try:
            st = node.stat()
            if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
                continue
            node.unlink()  # a stale node left from an earlier device with the same name
        except FileNotFoundError:
            pass
        os.mknod(node, stat.S_IFBLK | 0o660, want)
        created.append(str(node))
    return created


def blkid_probe(node: str) -> dict[str, str]:
    """TYPE, LABEL, UUID... of a device read directly (blkid -p): no udev, no blkid cache."""
    result = run(["blkid", "-p", "-o", "export", node], check=False)
    out: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str
    options: str


def mounts() -> list[Mount]:
    """Every mount of this mount namespace, in mount order (findmnt --list)."""
    result = run(["findmnt", "--json", "--list", "-o", "SOURCE,TARGET,FSTYPE,OPTIONS"])
    data = json.loads(result.stdout or "{}")
    return [
        Mount(
            re.sub(r"\[.*\]$", "", m.get("source") or ""),
            m.get("target") or "",
            m.get("fstype") or "",
            m.get("options") or "",
        )
        for m in data.get("filesystems", [])
    ]


def unmount_tree(target: str) -> None:
    """Unmount `target` and everything mounted below it, children first."""
    root = os.path.realpath(target)
    if root == "/":
        raise KaError("refusing to unmount everything under /", hint="give the target directory")
    below = [m.target for m in mounts() if m.target == root or m.target.startswith(root + "/")]
    for path in sorted(set(below), key=lambda p: (p.count("/"), p), reverse=True):
        run(["umount", path])


def _devnums(disk: str) -> set[int]:
    base = _sys_dir(disk)
    major, minor = (int(x) for x in (base / "dev").read_text().split(":"))
    nums = {os.makedev(major, minor)}
    nums |= {os.makedev(ma, mi) for _, ma, mi in kernel_partitions(disk).values()}
    return nums


def _rdev(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def check_disk_free(disk: str) -> None:
    """Raise DiskBusy when the disk or a partition is mounted, swapped on, or held."""
    nums = _devnums(disk)
    names = {disk_name(disk)} | {n for n, _, _ in kernel_partitions(disk).values()}
    for m in mounts():
        if m.source.startswith("/") and (
            _rdev(m.source) in nums or os.path.basename(m.source) in names
        ):
            what = "the running root filesystem" if m.target == "/" else "a mounted filesystem"
            raise DiskBusy(
                f"{disk} holds {what}: {m.source} on {m.target}",
                hint="refusing to touch it; unmount it first (or choose another disk)",
            )
    try:
        swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        swaps = []
    for line in swaps:
        source = line.split()[0] if line.split() else ""
        if _rdev(source) in nums:
            raise DiskBusy(f"{disk} holds active swap {source}", hint=f"run `swapoff {source}`")
    base = _sys_dir(disk)
    for holder_dir in [base / "holders"] + [base / n / "holders" for n in names if n != base.name]:
        held = sorted(p.name for p in holder_dir.iterdir()) if holder_dir.is_dir() else []
        if held:
            raise DiskBusy(
                f"{disk} is in use by {', '.join(held)} (device mapper, RAID or LVM)",
                hint="stop what uses it (dmsetup, mdadm --stop, vgchange -an) first",
            )


class LoopDevice:
    """A loop device over an image file, with partition scanning, detached at exit."""

    def __init__(
        self,
        image: str | os.PathLike[str],
        *,
        read_only: bool = False,
        sector_size: int | None = None,
    ) -> None:
        self.image = os.fspath(image)
        self.read_only = read_only
        self.sector_size = sector_size  # e.g. 4096 to stand in for a 4Kn disk
        self.device = ""

    def __enter__(self) -> LoopDevice:
        argv = ["losetup", "--find", "--show", "--partscan"]
        if self.read_only:
            argv.append("--read-only")
        if self.sector_size:
            argv += ["--sector-size", str(self.sector_size)]
        self.device = run([*argv, self.image]).stdout.strip()
        try:
            ensure_partition_nodes(self.device)
        except BaseException:
            self.detach()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def detach(self) -> None:
        if not self.device:
            return
        device, self.device = self.device, ""
        name = disk_name(device)
        partitions = [n for n, _, _ in kernel_partitions(device).values()]
        run(["losetup", "--detach", device])
        # Nodes that this process may have made (no udev) would point at a gone partition.
        for part in partitions:
            gone = not (SYS_BLOCK / name / part).exists()
            if gone and part.startswith(name + "p"):
                (Path("/dev") / part).unlink(missing_ok=True)
