"""What a node's disks become: whether a golden disk fits, new identities, partition GUIDs.

Pure decisions (`fits`, `new_uuid`, `mount_only_content`) are tested without disks.
"""

from __future__ import annotations

import dataclasses
import json
import uuid as uuidlib

from ka import run
from ka.clone.plan import ClonePlan, GoldenDisk
from ka.disk.apply import check_filesystem_sizes
from ka.disk.capacity import Contents, misfit
from ka.disk.desc import parse_desc
from ka.disk.errors import DoesNotFit
from ka.disk.plan import Plan, plan_layout


def fits(golden: GoldenDisk, size: int, plan: ClonePlan) -> str | None:
    """Why the golden disk's layout or data does not fit `size` bytes, or None.

    Checked before the disk is touched: a partition that cannot hold what the golden's
    filesystem holds (its bytes and, for ext, its inodes, beyond what the new filesystem
    keeps for itself) would fail only once tar ran out of room.
    """
    try:
        planned = plan_layout(parse_desc(golden.desc, f"<{golden.name}>"), size)
        check_filesystem_sizes(planned)
    except DoesNotFit as e:
        return e.message
    sizes = {p.number: p.size_bytes for p in planned.partitions}
    for part in plan.partitions_of(golden.name):
        if part.content == "tar" and (part.used or part.inodes):
            reason = misfit(Contents(part.fstype, part.used, part.inodes),
                            part.mountpoint or f"partition {part.number}",
                            sizes.get(part.number, 0))
            if reason:
                return reason
    for stream in plan.streams:
        if stream.kind == "raw" and stream.disk == golden.name:
            if sizes.get(stream.number, 0) < stream.size:
                return (f"raw partition {stream.number} needs {stream.size >> 20} MiB, "
                        f"would get {sizes.get(stream.number, 0) >> 20} MiB")
    return None


_LARGEST_DISK_MIB = 1 << 26  # 64 TiB


def smallest_disk(golden: GoldenDisk, plan: ClonePlan) -> int | None:
    """The smallest node disk, in whole MiB, that takes the golden disk's layout and data;
    None when none does (a partition of fixed size too small for what it must hold)."""
    lo, hi = 1, _LARGEST_DISK_MIB
    if fits(golden, hi << 20, plan) is not None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(golden, mid << 20, plan) is None:
            hi = mid
        else:
            lo = mid + 1
    return hi << 20


def fit_warnings(plan: ClonePlan) -> list[str]:
    """What the golden node can tell before any node joins: a layout that no disk can take,
    or one that a disk the size of its own could not."""
    out = []
    for golden in plan.disks:
        need = smallest_disk(golden, plan)
        if need is None:
            reason = fits(golden, _LARGEST_DISK_MIB << 20, plan)
            out.append(f"golden disk {golden.name}: no node disk can take it: {reason}")
        elif golden.size and need > golden.size:
            out.append(f"golden disk {golden.name}: a node disk of its size "
                       f"({golden.size >> 20} MiB) cannot take it: "
                       f"{fits(golden, golden.size, plan)}; the nodes need {need >> 20} MiB")
    return out


def new_uuid(fstype: str | None) -> str | None:
    if fstype == "vfat":
        h = uuidlib.uuid4().hex[:8].upper()
        return f"{h[:4]}-{h[4:]}"
    if fstype in ("ext2", "ext3", "ext4", "xfs", "btrfs", "swap", "jfs", "reiserfs"):
        return str(uuidlib.uuid4())
    return None


def mount_only_content(planned: Plan, plan: ClonePlan, disk: str) -> Plan:
    """The disk plan with mount points only where a tar stream lands.

    A partition formatted empty or copied raw need not be mounted to install, and the node's
    kernel may not even mount its filesystem (vfat in a minimal boot environment).
    """
    tar = {p.number for p in plan.partitions_of(disk) if p.content == "tar"}
    parts = tuple(
        p if p.number in tar or p.mountpoint is None else dataclasses.replace(p, mountpoint=None)
        for p in planned.partitions
    )
    return dataclasses.replace(planned, partitions=parts)


def read_partuuids(device: str) -> dict[int, str]:
    """Partition number -> PARTUUID as the kernel and fstab spell it (GPT GUID or MBR id-NN)."""
    result = run.run(["sfdisk", "--json", device], check=False)
    if result.returncode != 0:
        return {}
    table = json.loads(result.stdout).get("partitiontable", {})
    out: dict[int, str] = {}
    disk_id = str(table.get("id", ""))
    for part in table.get("partitions", []):
        node = str(part.get("node", ""))
        digits = ""
        for ch in reversed(node):
            if not ch.isdigit():
                break
            digits = ch + digits
        if not digits:
            continue
        number = int(digits)
        if table.get("label") == "gpt" and part.get("uuid"):
            out[number] = str(part["uuid"]).lower()
        elif table.get("label") == "dos" and disk_id:
            out[number] = f"{disk_id.removeprefix('0x').lower():0>8}-{number:02x}"
    return out
