"""The lab's disks: sparse image files on loop devices, the golden disk, read-only mounts.

The golden disk has a realistic GPT layout (ESP vfat, / ext4, /var xfs, swap) applied with the
disk layer. This kernel cannot mount vfat, so the ESP is filled with mtools and checked the
same way; the rest is mounted in the root mount namespace, where `ip netns exec` commands see
it (each of them gets a copy of the mounts as they are when it starts).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ka.disk as disk
from ka.disk.desc import parse_desc
from ka.disk.devices import blkid_probe, mounts
from ka.disk.plan import plan_layout
from ka.lab.checks import ExpectedPartition
from ka.lab.golden import FstabEntry, esp_files
from ka.run import run

MiB = 1024 * 1024

# Read-only mount options that never write to the disk (no journal replay) and accept a
# filesystem whose UUID is already mounted (a clone of the golden disk may share it).
READ_ONLY = {"ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,norecovery,nouuid"}
MIN_VAR = 320 * MiB   # mkfs.xfs refuses filesystems under 300 MB


def golden_desc(disk_size: int) -> str:
    """The golden layout for a disk of `disk_size` bytes; / takes what the others leave."""
    var = max(MIN_VAR, disk_size // 4) // MiB
    return ("label gpt\n"
            "esp 32MiB fs=vfat mount=/boot/efi label=ESP\n"
            "linux fill fs=ext4 mount=/ label=root\n"
            f"linux {var}MiB fs=xfs mount=/var label=var\n"
            "swap 32MiB label=swap\n")


def min_disk_size(desc: str) -> int:
    """Smallest disk the desc fits on with / at 64 MiB (a rough floor, for the CLI's check)."""
    layout = parse_desc(desc)
    fixed = sum(p.size.value for p in layout.partitions if p.size.kind == "bytes")
    return fixed + 66 * MiB


def expected_partitions(desc: str, disk_size: int) -> tuple[ExpectedPartition, ...]:
    plan = plan_layout(parse_desc(desc), disk_size)
    # The checks count in 512-byte sectors, as `sfdisk --json` does for these disks.
    return tuple(ExpectedPartition(p.number, p.start * p.sector_size // 512,
                                   p.size * p.sector_size // 512, p.fs, p.mountpoint)
                 for p in plan.partitions)


@dataclass
class Image:
    """A sparse image file attached to a loop device (with partition scan)."""

    path: Path
    size: int
    device: str = ""

    def partition(self, number: int) -> str:
        return disk.partition_device(self.device, number)

    def partition_nodes(self) -> None:
        disk.ensure_partition_nodes(self.device)


@contextlib.contextmanager
def attached_image(path: Path, size: int) -> Iterator[Image]:
    with open(path, "wb") as f:
        f.truncate(size)
    try:
        with disk.LoopDevice(str(path)) as loop:
            yield Image(path, size, loop.device)
    finally:
        path.unlink(missing_ok=True)


# How long a mount waits for a copy of the same filesystem held in another mount namespace
# to go (see `_mount`).
BUSY_WAIT = 30.0


def _mount(argv: list[str], device: str) -> None:
    """Run mount(8), waiting (bounded) while another mount namespace holds the filesystem.

    This machine's / is a private mount, so every mount namespace that another process
    creates (`ip netns exec`, `unshare -m`: any lab or test running at the same time) keeps
    its own copy of the mounts of that moment, and with it the filesystem, after it is
    unmounted here. Mounting it again read-only while such a copy is read-write fails with
    EBUSY ("already mounted or mount point busy") until that process ends.
    """
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        result = run(argv, check=False)
        if result.returncode == 0:
            return
        busy = "already mounted or mount point busy" in result.stderr
        ours = any(m.source == device for m in mounts())
        if not busy or ours or time.monotonic() > deadline:
            run(argv)  # raises, with the command and its stderr
            return
        time.sleep(0.2)


@contextlib.contextmanager
def mounted(device: str, where: Path, fstype: str, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    _mount(["mount", "-t", fstype, "-o", options, device, str(where)], device)
    try:
        yield where
    finally:
        # A lazy unmount as the last resort keeps a busy mount from leaking the loop device.
        if run(["umount", str(where)], check=False).returncode != 0:
            run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def mounted_tree(image: Image, expected: tuple[ExpectedPartition, ...], where: Path,
                 read_only: bool) -> Iterator[Path]:
    """Mount / and then every other mountable filesystem of `image` under `where`."""
    image.partition_nodes()
    order = sorted((p for p in expected if p.mountpoint and p.fstype in READ_ONLY),
                   key=lambda p: (p.mountpoint or "").count("/") - (p.mountpoint == "/"))
    with contextlib.ExitStack() as stack:
        for p in order:
            assert p.mountpoint is not None and p.fstype is not None
            target = where / p.mountpoint.lstrip("/")
            options = READ_ONLY[p.fstype] if read_only else "rw"
            stack.enter_context(mounted(image.partition(p.number), target, p.fstype, options))
        yield where


def format_golden(image: Image, desc: str) -> None:
    """Partition and format the golden disk with the disk layer (nothing mounted yet)."""
    disk.apply_plan(plan_layout(parse_desc(desc, "golden.desc"), image.size), image.device)
    image.partition_nodes()


def fill_esp(device: str, seed: bytes | None = None) -> int:
    """Put the golden EFI files on the vfat ESP with mtools; returns the number of files."""
    files = esp_files(seed) if seed is not None else esp_files()
    env = {"MTOOLS_SKIP_CHECK": "1"}
    made: set[str] = set()
    for rel, data in sorted(files.items()):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                run(["mmd", "-i", device, f"::/{d}"], env=env)
                made.add(d)
        with tempfile.NamedTemporaryFile(prefix="ka-esp-") as tmp:
            tmp.write(data)
            tmp.flush()
            run(["mcopy", "-i", device, tmp.name, f"::/{rel}"], env=env)
    return len(files)


def fstab_entries(image: Image, expected: tuple[ExpectedPartition, ...]) -> list[FstabEntry]:
    """The golden fstab, every partition by its real UUID."""
    entries = []
    for p in sorted(expected, key=lambda p: (p.mountpoint is None, p.mountpoint or "")):
        uuid = blkid_probe(image.partition(p.number)).get("UUID")
        if uuid is None or p.fstype is None:
            continue
        if p.fstype == "swap":
            entries.append(FstabEntry(f"UUID={uuid}", "none", "swap", "sw"))
        else:
            passno = 1 if p.mountpoint == "/" else 2
            options = "umask=0077" if p.fstype == "vfat" else "defaults"
            entries.append(FstabEntry(f"UUID={uuid}", p.mountpoint or "none", p.fstype,
                                      options, 0, passno))
    return entries
