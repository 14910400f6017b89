"""Describe existing disks as desc layouts (the job of the original `fdisk_to_desc`).

Reads `lsblk --json` (which disks), `sfdisk --json` (the table), `blkid -p` (filesystem type
and label: without udev, lsblk knows neither) and `findmnt --json` (mount points). The last
partition of a level that reaches the end of its level becomes `fill`, so the desc also fits
a disk of another size.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ka.disk.devices import blkid_probe, disk_size, ensure_partition_nodes, mounts, sector_size
from ka.disk.layout import Layout, PartitionSpec, Size, TableLabel
from ka.disk.plan import MBR_MAX_SECTORS
from ka.disk.types import FILESYSTEMS, LABEL_LIMITS, type_from_code
from ka.errors import KaError
from ka.run import run

# Never a machine's disk: RAM disks, compressed swap, optical drives, eMMC boot areas.
_NOT_DISKS = re.compile(r"^(zram|ram|sr|fd)\d|^mmcblk\d+(boot\d+|rpmb)$")
# What a desc value can hold (quoted when it has spaces): no double quote, no control character.
_SAFE_VALUE = re.compile(r'^[^"\x00-\x1f]+$')


@dataclass(frozen=True)
class DiskReport:
    device: str
    size: int  # bytes
    sector_size: int
    layout: Layout
    note: str | None = None  # why the layout is empty, when it is
    readable: bool = True  # False: its table could not be read, the layout says nothing


def list_disks() -> list[str]:
    """Whole disks of this machine (loop devices only when asked for by name)."""
    out = run(["lsblk", "--json", "--bytes", "--nodeps", "-o", "NAME,PATH,TYPE,SIZE"]).stdout
    disks = []
    for dev in json.loads(out or "{}").get("blockdevices", []):
        if dev.get("type") == "disk" and int(dev.get("size") or 0) > 0:
            if not _NOT_DISKS.match(dev.get("name", "")):
                disks.append(dev.get("path") or f"/dev/{dev['name']}")
    return disks


def probe(disks: Sequence[str] | None = None) -> dict[str, Layout]:
    """disk path -> its layout as a desc would say it."""
    return {r.device: r.layout for r in probe_disks(disks)}


def probe_disks(disks: Sequence[str] | None = None) -> list[DiskReport]:
    """Like `probe`, with sizes; a disk that cannot be read raises when it was asked for by
    name, and is reported with a note when found by enumeration."""
    targets = list(disks) if disks else list_disks()
    by_source: dict[str, str] = {}
    for m in mounts():
        if m.source.startswith("/dev/"):
            by_source.setdefault(os.path.realpath(m.source), m.target)
    return [_probe_one(d, by_source, strict=bool(disks)) for d in targets]


def _probe_one(disk: str, by_source: dict[str, str], strict: bool) -> DiskReport:
    size, sector = disk_size(disk), sector_size(disk)
    result = run(["sfdisk", "--json", disk], check=False)
    if result.returncode != 0:
        empty = Layout("gpt", ())
        if "recognized partition table" in result.stderr:
            whole = blkid_probe(disk).get("TYPE")
            note = f"holds {whole} directly, without a partition table" if whole else None
            return DiskReport(disk, size, sector, empty, note or "no partition table")
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "unknown"
        if strict:
            raise KaError(
                f"cannot read the partition table of {disk}: {reason}",
                hint="run as root; a disk may also be locked by the system",
            )
        return DiskReport(disk, size, sector, empty, f"cannot be read: {reason}",
                          readable=False)
    table = json.loads(result.stdout)["partitiontable"]
    label: TableLabel = "gpt" if table["label"] == "gpt" else "dos"
    if table["label"] not in ("gpt", "dos"):
        raise KaError(f"{disk} has a '{table['label']}' label; ka handles gpt and dos")
    ensure_partition_nodes(disk)
    total = size // sector
    align = max(1024 * 1024 // sector, 1)
    top_end = table.get("lastlba", total - 1) + 1 if label == "gpt" else min(total, MBR_MAX_SECTORS)
    parts = sorted(table.get("partitions", []), key=_number)
    extended = next((p for p in parts if type_from_code(p["type"], label) == "extended"), None)
    levels = {
        "top": [p for p in parts if _number(p) <= 4 or label == "gpt"],
        "logical": [p for p in parts if label == "dos" and _number(p) > 4],
    }
    specs: list[PartitionSpec] = []
    for p in parts:
        is_logical = label == "dos" and _number(p) > 4
        level = levels["logical" if is_logical else "top"]
        end = (extended["start"] + extended["size"]) if is_logical and extended else top_end
        reaches_end = p is level[-1] and p["start"] + p["size"] >= end - align
        nbytes = p["size"] * sector
        specs.append(
            _spec(
                p,
                label,
                Size.fill() if reaches_end else Size.of_bytes(nbytes),
                is_logical,
                by_source,
            )
        )
    return DiskReport(disk, size, sector, Layout(label, tuple(specs)))


def _number(p: dict) -> int:  # type: ignore[type-arg]
    m = re.search(r"(\d+)$", p["node"])
    return int(m.group(1)) if m else 0


def _spec(
    p: dict,  # type: ignore[type-arg]
    label: str,
    size: Size,
    is_logical: bool,
    by_source: dict[str, str],
) -> PartitionSpec:
    type_ = type_from_code(p["type"], label)
    if type_ == "extended":
        return PartitionSpec("extended", size, kind="extended")
    info = blkid_probe(p["node"])
    fs = info.get("TYPE")
    fs = fs if fs in FILESYSTEMS else None
    if type_ == "swap" and fs is None:
        type_ = "linux"  # a swap-typed partition without swap on it: say what is really there
    if fs == "swap" and type_ not in ("swap", "linux") or type_ in ("bios", "lvm", "raid"):
        fs = None
    lab = info.get("LABEL")
    if lab is not None and (
        not _SAFE_VALUE.match(lab) or len(lab.encode()) > LABEL_LIMITS.get(fs or "", 255)
    ):
        lab = None  # not expressible in a desc line; the filesystem keeps it
    name = p.get("name") if label == "gpt" else None
    if name is not None and not _SAFE_VALUE.match(name):
        name = None
    mountpoint = by_source.get(os.path.realpath(p["node"])) if fs and fs != "swap" else None
    boot = bool(p.get("bootable")) or "LegacyBIOSBootable" in (p.get("attrs") or "")
    return PartitionSpec(
        type_,
        size,
        kind="logical" if is_logical else "primary",
        fs=fs,
        mountpoint=mountpoint if mountpoint and _SAFE_VALUE.match(mountpoint) else None,
        label=lab,
        name=name,
        boot=boot,
    )
