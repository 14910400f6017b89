"""Which local disk receives which golden disk: by order and size, or as the operator says."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ka import run
from ka.clone.plan import ClonePlan, GoldenDisk
from ka.errors import KaError, UsageError


class DiskMappingError(KaError):
    """No suitable local disk for a golden disk (missing, too small, in use)."""

    exit_code = 21


@dataclass(frozen=True)
class LocalDisk:
    device: str  # /dev/sda
    size: int  # bytes
    in_use: bool = False  # holds a mounted filesystem or swap
    removable: bool = False
    read_only: bool = False


@dataclass(frozen=True)
class DiskAssignment:
    golden: str  # GoldenDisk.name
    device: str
    size: int


# fits(golden_disk, size) -> None when the golden disk's layout and content fit in `size`
# bytes, else the reason in words.
FitCheck = Callable[[GoldenDisk, int], "str | None"]


def map_disks(
    plan: ClonePlan,
    local: Sequence[LocalDisk],
    given: Mapping[str, str],
    fits: FitCheck,
) -> tuple[DiskAssignment, ...]:
    """Assign a local disk to every golden disk of the plan.

    Disks given with --disk are used as given (still checked for size); the others take the
    free local disks in order, skipping disks in use, read-only or removable. A golden disk
    that gets no disk, or a disk that is too small, raises with the reason.
    """
    unknown = set(given) - {d.name for d in plan.disks} - {_short(d.name) for d in plan.disks}
    if unknown:
        raise UsageError(
            f"--disk names golden disk(s) {', '.join(sorted(unknown))} that the plan does not have",
            hint="golden disks in this plan: " + ", ".join(d.name for d in plan.disks),
        )
    by_device = {d.device: d for d in local}
    taken: set[str] = set()
    out: list[DiskAssignment] = []
    explicit = {d.name: given.get(d.name) or given.get(_short(d.name)) for d in plan.disks}
    for dev in explicit.values():
        if dev:
            taken.add(dev)
    for golden in plan.disks:
        dev = explicit[golden.name]
        if dev:
            disk = by_device.get(dev)
            if disk is None:
                raise DiskMappingError(f"--disk {golden.name}={dev}: no such block device here")
            if disk.in_use:
                raise DiskMappingError(
                    f"{dev} holds a mounted filesystem or active swap; refusing to overwrite it",
                    hint="unmount it first, or give another disk with --disk",
                )
            reason = fits(golden, disk.size)
            if reason:
                raise DiskMappingError(
                    f"disk {dev} ({_mib(disk.size)}) is too small for golden disk "
                    f"{golden.name}: {reason}"
                )
            out.append(DiskAssignment(golden.name, dev, disk.size))
            continue
        rejected: list[str] = []
        chosen: LocalDisk | None = None
        for disk in local:
            if disk.device in taken:
                continue
            if disk.in_use or disk.read_only or disk.removable:
                what = "in use" if disk.in_use else "read-only" if disk.read_only else "removable"
                rejected.append(f"{disk.device} is {what}")
                continue
            reason = fits(golden, disk.size)
            if reason:
                rejected.append(f"{disk.device} ({_mib(disk.size)}) is too small: {reason}")
                continue
            chosen = disk
            break
        if chosen is None:
            detail = "; ".join(rejected) if rejected else "no free disk found"
            raise DiskMappingError(
                f"no local disk for golden disk {golden.name}: {detail}",
                hint="give the target disk with --disk DRIVE=DEV",
            )
        taken.add(chosen.device)
        out.append(DiskAssignment(golden.name, chosen.device, chosen.size))
    return tuple(out)


def parse_disk_options(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        drive, sep, dev = value.partition("=")
        if not sep or not drive or not dev:
            raise UsageError(f"--disk {value!r}: expected DRIVE=DEV, e.g. sda=/dev/vda")
        out[_short(drive)] = dev
    return out


def local_disks(extra: Sequence[str] = ()) -> list[LocalDisk]:
    """Whole disks of this machine (type disk, plus any device named in `extra`), in name order."""
    result = run.run(
        ["lsblk", "--json", "--bytes", "--output", "NAME,PATH,SIZE,TYPE,RO,RM,MOUNTPOINT,FSTYPE"]
    )
    return disks_from_lsblk(json.loads(result.stdout), extra)


def disks_from_lsblk(data: Mapping[str, object], extra: Sequence[str] = ()) -> list[LocalDisk]:
    out: list[LocalDisk] = []
    devices = data.get("blockdevices", [])
    assert isinstance(devices, list)
    for dev in devices:
        path = dev.get("path") or f"/dev/{dev['name']}"
        if dev.get("type") != "disk" and path not in extra:
            continue
        out.append(
            LocalDisk(
                device=path,
                size=int(dev.get("size") or 0),
                in_use=_in_use(dev),
                removable=bool(dev.get("rm")) and path not in extra,
                read_only=bool(dev.get("ro")),
            )
        )
    return sorted(out, key=lambda d: d.device)


def _in_use(dev: Mapping[str, object]) -> bool:
    if dev.get("mountpoint"):  # active swap shows as "[SWAP]"
        return True
    children = dev.get("children") or []
    assert isinstance(children, list)
    return any(_in_use(c) for c in children)


def _short(name: str) -> str:
    return name.removeprefix("/dev/")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"

