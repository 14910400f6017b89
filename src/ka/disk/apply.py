"""Applying a plan to a block device: wipe, partition (sfdisk script), mkfs, mount.

The work is first built as a tuple of `Step`s (pure, printable: that is `--dry-run`), then
executed one by one through `ka.run`. Every check that can refuse runs before the first step
that changes the disk. Mounts made here are undone when a later step fails.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ka.disk.devices import (
    blkid_probe,
    check_disk_free,
    disk_name,
    disk_size,
    ensure_partition_nodes,
    kernel_partitions,
    partition_device,
    sector_size,
)
from ka.disk.errors import DoesNotFit
from ka.disk.layout import MIB
from ka.disk.plan import Plan, PlannedPartition, usable_area
from ka.disk.types import GUID_RE
from ka.errors import CommandError, KaError, UsageError
from ka.run import require, run

log = logging.getLogger("ka.disk")

# Smallest partition each mkfs accepts (xfsprogs >= 5.19 refuses below 300 MB; mkfs.btrfs
# states its own floor; mkfs.jfs wants 16 MiB and says so on stdout only; mkfs.reiserfs needs
# room for its 8193-block journal). Checked before the disk is touched.
MIN_FS_BYTES: dict[str, int] = {
    "xfs": 300 * MIB,
    "btrfs": 114294784,
    "ext2": MIB,
    "ext3": 2 * MIB,
    "ext4": 2 * MIB,
    "vfat": 64 * 1024,
    "swap": 40 * 1024,
    "jfs": 16 * MIB,
    "reiserfs": 33 * MIB,
}


@dataclass(frozen=True)
class Step:
    """One thing apply does: a command (argv, optional stdin) or an in-process action."""

    description: str
    argv: tuple[str, ...] = ()
    input: str | None = None
    action: str | None = None  # "partition-nodes": partx, then mknod what udev would have made

    def command_line(self) -> str:
        if self.action == "partition-nodes":
            return f"# {self.description}"
        line = shlex.join(self.argv)
        if self.input is not None:
            line += " <<'EOF'\n" + self.input.rstrip("\n") + "\nEOF"
        return line


class AppliedPartition(NamedTuple):
    """A tuple (number, devnode, fstype, uuid, label, mountpoint), also readable by name."""

    number: int
    devnode: str
    fstype: str | None
    uuid: str | None
    label: str | None
    mountpoint: str | None  # the path inside the target tree ("/var"), not the host path


@dataclass(frozen=True)
class AppliedLayout:
    device: str
    partitions: tuple[AppliedPartition, ...]
    mounted: tuple[str, ...]  # host paths mounted, parents first
    steps: tuple[Step, ...]
    dry_run: bool = False


def vfat_volume_id(uuid: str) -> str:
    """mkfs.vfat -i takes 8 hex digits; "ABCD-1234" and a full UUID both give them."""
    digits = "".join(c for c in uuid if c in "0123456789abcdefABCDEF")
    if len(digits) < 8:
        raise UsageError(f"'{uuid}' cannot be a vfat volume id", hint="use the form ABCD-1234")
    return digits[:8].upper()


def mkfs_commands(
    fs: str, devnode: str, *, label: str | None, uuid: str | None, size_bytes: int, role: str
) -> list[tuple[str, ...]]:
    """The exact commands that create filesystem `fs` on `devnode`."""
    lab = label or None
    if uuid and fs != "vfat" and not GUID_RE.match(uuid):
        raise UsageError(
            f"'{uuid}' is not a UUID for the {fs} filesystem on {devnode}",
            hint="a UUID looks like 0fc63daf-8483-4772-8e79-3d69d8477de4 (uuidgen prints one)",
        )
    if fs in ("ext2", "ext3", "ext4"):
        argv = [f"mkfs.{fs}", "-F", "-q"]
        argv += ["-L", lab] if lab else []
        argv += ["-U", uuid] if uuid else []
    elif fs == "xfs":
        argv = ["mkfs.xfs", "-f", "-q"]
        argv += ["-L", lab] if lab else []
        argv += ["-m", f"uuid={uuid}"] if uuid else []
    elif fs == "btrfs":
        argv = ["mkfs.btrfs", "-f", "-q"]
        argv += ["-L", lab] if lab else []
        argv += ["-U", uuid] if uuid else []
    elif fs == "vfat":
        # Firmware expects FAT32 on an ESP; FAT32 needs enough clusters, hence the size test.
        argv = ["mkfs.vfat"] + (["-F", "32"] if role == "esp" and size_bytes >= 64 * MIB else [])
        argv += ["-n", lab] if lab else []
        argv += ["-i", vfat_volume_id(uuid)] if uuid else []
    elif fs == "swap":
        argv = ["mkswap"]
        argv += ["-L", lab] if lab else []
        argv += ["-U", uuid] if uuid else []
    elif fs == "jfs":
        argv = ["mkfs.jfs", "-q"] + (["-L", lab] if lab else [])
        return [(*argv, devnode)] + ([("jfs_tune", "-U", uuid, devnode)] if uuid else [])
    elif fs == "reiserfs":
        argv = ["mkfs.reiserfs", "-q", "-f"]
        argv += ["-l", lab] if lab else []
        argv += ["-u", uuid] if uuid else []
    else:
        raise UsageError(f"ka cannot create a '{fs}' filesystem")
    return [(*argv, devnode)]


def plan_steps(
    plan: Plan,
    device: str,
    *,
    target: str | None = None,
    uuids: Mapping[int, str] | None = None,
    old_partitions: Sequence[str] = (),
) -> tuple[Step, ...]:
    """Every step that applies `plan` to `device`, in order. Pure."""
    uuids = dict(uuids or {})
    steps = [
        Step(f"wipe signatures on old partition {p}", ("wipefs", "--all", p))
        for p in old_partitions
    ]
    steps.append(Step(f"wipe signatures on {device}", ("wipefs", "--all", device)))
    steps.append(
        Step(
            f"write the {plan.label} partition table on {device}",
            ("sfdisk", "--quiet", "--wipe", "always", device),
            input=plan.sfdisk_script(),
        )
    )
    name = disk_name(device)
    steps.append(
        Step(
            f"partx --update {device}; create missing partition nodes from /sys/block/{name}/*/dev",
            action="partition-nodes",
        )
    )
    for p in sorted(plan.partitions, key=lambda p: p.number):
        if p.kind == "extended":
            continue
        node = partition_device(device, p.number)
        steps.append(Step(f"wipe old signatures inside {node}", ("wipefs", "--all", node)))
        if p.fs:
            uuid = uuids.get(p.number, p.uuid)
            for argv in mkfs_commands(
                p.fs, node, label=p.label, uuid=uuid, size_bytes=p.size_bytes, role=p.type
            ):
                steps.append(Step(f"create {p.fs} on {node}", argv))
    if target is not None:
        for p, path in _mount_order(plan, target):
            node = partition_device(device, p.number)
            steps.append(Step(f"create mount point {path}", ("mkdir", "-p", path)))
            opts = ("-o", p.options) if p.options else ()
            steps.append(
                Step(f"mount {node} on {path}", ("mount", "-t", p.fs or "auto", *opts, node, path))
            )
    return tuple(steps)


def _mount_order(plan: Plan, target: str) -> list[tuple[PlannedPartition, str]]:
    mountable = [p for p in plan.partitions if p.mountpoint and p.fs and p.fs != "swap"]
    # Parents first: "/" before "/var" before "/var/log".
    mountable.sort(
        key=lambda p: (p.mountpoint != "/", (p.mountpoint or "").count("/"), p.mountpoint or "")
    )
    return [
        (p, os.path.join(target, (p.mountpoint or "/").lstrip("/")).rstrip("/") or "/")
        for p in mountable
    ]


def check_filesystem_sizes(plan: Plan) -> None:
    """Raise DoesNotFit when a partition is too small for the filesystem asked on it."""
    for p in plan.partitions:
        floor = MIN_FS_BYTES.get(p.fs or "")
        if floor and p.size_bytes < floor:
            raise DoesNotFit(
                f"partition {p.number} is {p.size_bytes / MIB:.1f} MiB, too small for {p.fs} "
                f"(at least {floor / MIB:.0f} MiB)",
                hint=f"make partition {p.number} larger, or choose another filesystem",
            )


def check_fits(plan: Plan, device: str) -> None:
    """Raise DoesNotFit when `plan` does not fit the real device (size, sector size)."""
    real_sector = sector_size(device)
    if real_sector != plan.sector_size:
        raise DoesNotFit(
            f"{device} has {real_sector}-byte sectors; the plan was made for {plan.sector_size}",
            hint="plan again for this disk (ka desc check FILE --disk DEV)",
        )
    total = disk_size(device) // real_sector
    _, end = usable_area(plan.label, total, real_sector)
    needed = max((p.end for p in plan.partitions), default=0)
    if needed > end:
        raise DoesNotFit(
            f"{device} is {total * real_sector // MIB} MiB; the layout needs "
            f"{-(-needed * real_sector // MIB)} MiB",
            hint="use a larger disk, or a desc with smaller sizes, percentages or `fill`",
        )


def apply_plan(
    plan: Plan,
    device: str,
    *,
    target: str | None = None,
    dry_run: bool = False,
    uuids: Mapping[int, str] | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> AppliedLayout:
    """Partition, format and (with `target`) mount `device` as `plan` says.

    Refuses, before changing anything, a device that is not a whole block device, that is
    mounted, swapped on or held, that holds the running root, or that is too small, and a
    target that is the running system's root. With
    `dry_run` the same checks run and the steps are returned, not executed.
    """
    if target is not None and os.path.realpath(target) == "/":
        raise UsageError(
            "refusing to mount the new filesystems over / (the running system)",
            hint="give an empty directory as the target, e.g. --target /mnt/target",
        )
    if target is not None and os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(
            f"the target {target} is not a directory", hint="give a directory (made if missing)"
        )
    # The kernel name: /dev/disk/by-id links to partitions only appear with udev, and late.
    device = os.path.realpath(device)
    try:
        mode = os.stat(device).st_mode
    except OSError as e:
        raise KaError(f"cannot use {device}: {e.strerror}", hint="give a whole disk") from e
    if not stat.S_ISBLK(mode):
        raise KaError(
            f"{device} is not a block device",
            hint="for an image file, attach it first: losetup --find --show -P FILE",
        )
    check_filesystem_sizes(plan)
    check_fits(plan, device)
    check_disk_free(device)
    if not dry_run:
        ensure_partition_nodes(device)  # the old partitions' nodes, to wipe them
    old = [partition_device(device, n) for n in sorted(kernel_partitions(device))]
    steps = plan_steps(plan, device, target=target, uuids=uuids, old_partitions=old)
    for step in steps:
        if step.argv:
            require(step.argv[0])
    applied = _applied(plan, device, uuids or {}, None)
    mount_paths = tuple(path for _, path in _mount_order(plan, target)) if target else ()
    if dry_run:
        return AppliedLayout(device, applied, mount_paths, steps, dry_run=True)
    mounted: list[str] = []
    expected = {p.number for p in plan.partitions}
    try:
        for step in steps:
            log.info("%s", step.description)
            if on_step is not None:
                on_step(step)
            if step.action == "partition-nodes":
                ensure_partition_nodes(device, expected=expected)
                continue
            result = run(step.argv, input=step.input, check=False)
            if result.returncode != 0:
                hint = _mount_hint(step.argv[2]) if step.argv[0] == "mount" else None
                raise CommandError(result.argv, result.returncode, result.stderr,
                                   stdout=result.stdout, hint=hint)
            if step.argv[0] == "mount":
                mounted.append(step.argv[-1])
    except BaseException:
        for path in reversed(mounted):
            run(["umount", path], check=False)
        raise
    found = {
        p.number: blkid_probe(partition_device(device, p.number))
        for p in plan.partitions
        if p.kind != "extended"
    }
    return AppliedLayout(device, _applied(plan, device, uuids or {}, found), tuple(mounted), steps)


def _mount_hint(fs: str) -> str:
    try:
        known = {line.split()[-1] for line in open("/proc/filesystems") if line.strip()}
    except OSError:
        known = set()
    if fs not in known:
        return (
            f"this kernel does not list {fs} in /proc/filesystems: load its module "
            "(modprobe), or leave that partition without a mount point"
        )
    return "check the mount options (options=) of that partition"


def _applied(
    plan: Plan, device: str, uuids: Mapping[int, str], found: Mapping[int, dict[str, str]] | None
) -> tuple[AppliedPartition, ...]:
    out = []
    for p in sorted(plan.partitions, key=lambda p: p.number):
        if p.kind == "extended":
            continue
        info = (found or {}).get(p.number, {})
        uuid = info.get("UUID") if found is not None else uuids.get(p.number, p.uuid)
        out.append(
            AppliedPartition(
                p.number, partition_device(device, p.number), p.fs, uuid, p.label, p.mountpoint
            )
        )
    return tuple(out)
