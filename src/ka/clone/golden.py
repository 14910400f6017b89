"""The golden node's side of planning: read its tree, disks and fstab into a `ClonePlan`."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ka import run
from ka.clone import tarstream
from ka.clone.bootloader import MBR_BOOT_CODE
from ka.clone.coverage import check_copies
from ka.clone.fstab import IDENTITY_DIRS, fstab_entries
from ka.clone.hostnames import HostnameRule
from ka.clone.plan import (
    BootloaderRequest,
    ClonePlan,
    ExcludedDir,
    GoldenDisk,
    GoldenPartition,
    Stream,
)
from ka.disk.desc import Layout, parse_desc
from ka.disk.devices import blkid_probe
from ka.errors import KaError, UsageError

SYS_BLOCK = "/sys/class/block"
CONTENT_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "jfs", "reiserfs")


@dataclass(frozen=True)
class CloneOptions:
    nodes: int
    root: str = "/"
    prefix: str = "ka"
    excludes: tuple[str, ...] = ()
    exclude_disks: tuple[str, ...] = ()
    mbr: tuple[str, ...] = ()  # -m DRIVE
    mbr_files: Mapping[str, str] = field(default_factory=dict)  # -M DRIVE FILE
    raws: tuple[str, ...] = ()  # -D PARTITION
    descs: Mapping[str, str] = field(default_factory=dict)  # -p DRIVE FILE
    release_delay: int | None = None
    bootloader: BootloaderRequest = BootloaderRequest()
    hostnames: HostnameRule | None = None
    compress: str | None = None
    reports_before_release: bool = False  # --pxe: act on the reports before the release


@dataclass(frozen=True)
class Mount:
    mountpoint: str  # in the clone
    source: str  # device path
    fstype: str
    path: str  # where it is mounted on the golden node


@dataclass(frozen=True)
class BlockIdentity:
    fstype: str | None = None
    uuid: str | None = None
    label: str | None = None
    partuuid: str | None = None


def short(name: str) -> str:
    return name.removeprefix("/dev/")


def clone_mounts(mounts: Sequence[Mapping[str, str]], root: str) -> list[Mount]:
    """The block-device filesystems of the tree at `root`, with their mount point in the clone.

    `mounts` are findmnt rows (target, source, fstype). When `root` is not itself a mount
    point, the filesystem holding it is the clone's "/" only if it is a block device.
    """
    root = root.rstrip("/") or "/"
    out: dict[str, Mount] = {}
    for m in mounts:
        target, source, fstype = m["target"], m.get("source") or "", m.get("fstype") or ""
        if not source.startswith("/dev/") or fstype not in CONTENT_FS:
            continue
        if target == root:
            mp = "/"
        elif root == "/" and target.startswith("/"):
            mp = target
        elif target.startswith(root + "/"):
            mp = target[len(root) :]
        else:
            continue
        # Over-mounts: the last mount on a path is the visible one.
        out[mp] = Mount(mp, source.split("[", 1)[0], fstype, target)
    return sorted(out.values(), key=lambda m: (m.mountpoint.count("/"), m.mountpoint))


def partition_of(device: str, sys_root: str = "/sys") -> tuple[str, int] | None:
    """(disk name, partition number) of a partition device, from sysfs; None if not a partition."""
    name = os.path.basename(os.path.realpath(device))
    entry = Path(sys_root, "class/block", name)
    try:
        number = int((entry / "partition").read_text().strip())
    except (OSError, ValueError):
        return None
    disk = os.path.basename(os.path.dirname(os.path.realpath(entry)))
    return disk, number


def blkid(device: str) -> BlockIdentity:
    """Identity read from the device itself (-p: no cache, works without udev)."""
    values = blkid_probe(device)
    return BlockIdentity(
        fstype=values.get("TYPE"),
        uuid=values.get("UUID"),
        label=values.get("LABEL"),
        partuuid=values.get("PART_ENTRY_UUID"),
    )


def read_mounts() -> list[dict[str, str]]:
    result = run.run(["findmnt", "--json", "--list", "--output", "TARGET,SOURCE,FSTYPE"])
    return list(json.loads(result.stdout).get("filesystems", []))


def used_bytes(path: str) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def used_inodes(path: str) -> int:
    st = os.statvfs(path)
    return max(0, st.f_files - st.f_ffree)


@dataclass
class _Disk:
    name: str
    device: str | None
    layout: Layout
    probed: bool


def build_plan(opts: CloneOptions) -> ClonePlan:
    """Read the golden tree at `opts.root` (mounted filesystems, fstab, disks) into a plan."""
    root = os.path.realpath(opts.root)
    if not os.path.isdir(root):
        raise UsageError(f"--root {opts.root}: not a directory")
    notes: list[str] = []
    fstab_path = Path(root, "etc/fstab")
    fstab = fstab_path.read_text() if fstab_path.exists() else ""
    if not fstab:
        notes.append(f"{fstab_path} is missing or empty: the clones get an empty fstab")
    mounts = clone_mounts(read_mounts(), root)
    by_partition: dict[tuple[str, int], Mount] = {}
    for m in mounts:
        where = partition_of(m.source)
        if where:
            by_partition[where] = m
    excluded = {short(d) for d in opts.exclude_disks}
    tree_disks = sorted({d for d, _n in by_partition})
    for name in sorted(excluded):
        # Harmless (the original's own example excludes an sdb that a machine may lack); its
        # /dev/NAME fstab entries are still commented out, as they name no cloned disk.
        if name not in tree_disks and not Path(SYS_BLOCK, name).exists():
            notes.append(f"--exclude-disk {name}: no such disk on this machine, nothing to "
                         "leave out (disks of the golden tree: "
                         + (", ".join(tree_disks) or "none") + ")")
    disks = _golden_disks(opts, mounts, by_partition, excluded, notes)
    partitions: list[GoldenPartition] = []
    finished: list[GoldenDisk] = []
    raw_wanted = {short(r) for r in opts.raws}
    for disk in disks:
        specs = []
        for number, spec in disk.layout.numbered():
            if spec.kind == "extended":
                specs.append(spec)
                continue
            ident = BlockIdentity()
            device = None
            if disk.device:
                from ka.disk import partition_device

                device = partition_device(disk.device, number)
                ident = blkid(device) if os.path.exists(device) else ident
            mount = by_partition.get((short(disk.device or disk.name), number))
            fstype = spec.fs or (mount.fstype if mount else None) or ident.fstype
            mp = mount.mountpoint if mount else None
            if mp is None:
                mp = _fstab_mountpoint(fstab, ident, device)
            if mp is None and not disk.probed:
                mp = spec.mountpoint
            if fstype == "swap":
                mp = None
            label = spec.label or ident.label
            content = "none"
            if device and (short(device) in raw_wanted or f"{disk.name}:{number}" in raw_wanted):
                content = "raw"
                raw_wanted.discard(short(device))
                raw_wanted.discard(f"{disk.name}:{number}")
            elif mp and fstype in CONTENT_FS:
                if mount is not None or (disk.device is None and os.path.isdir(root + mp)):
                    content = "tar"
                else:
                    notes.append(
                        f"{disk.name} partition {number} ({fstype} {mp}) is not mounted under "
                        f"{root}: the nodes format it empty; use --raw to copy it"
                    )
            partitions.append(
                GoldenPartition(
                    disk=disk.name, number=number, fstype=fstype, mountpoint=mp,
                    label=label, uuid=ident.uuid, partuuid=ident.partuuid, device=device,
                    aliases=device_aliases(fstab, device),
                    # Only a mounted filesystem says how much it holds; a directory's
                    # statvfs would describe whatever filesystem it happens to sit on.
                    used=used_bytes(mount.path) if mount and content == "tar" else 0,
                    inodes=used_inodes(mount.path) if mount and content == "tar" else 0,
                    content=content,
                )
            )
            specs.append(dataclasses.replace(
                spec, fs=fstype if fstype in (*CONTENT_FS, "swap") else spec.fs,
                mountpoint=mp if fstype != "swap" else None, label=label, uuid=None,
            ))
        layout = Layout(disk.layout.label, tuple(specs))
        finished.append(GoldenDisk(
            name=disk.name, desc=layout.to_desc(), size=_disk_size(disk.device),
            device=disk.device, boot_code=_boot_code(opts, disk),
        ))
    if raw_wanted:
        raise UsageError(
            f"--raw {', '.join(sorted(raw_wanted))}: not a partition of the golden disks",
            hint="name it as the partition device (sda3, /dev/sda3) or DRIVE:NUMBER",
        )
    excluded_dirs = _excluded_dirs(root, opts.excludes, notes)
    streams = _streams(opts.prefix, partitions, excluded_dirs, opts.excludes)
    hostname_file = Path(root, "etc/hostname")
    plan = ClonePlan(
        prefix=opts.prefix,
        nodes=opts.nodes,
        disks=tuple(finished),
        partitions=tuple(partitions),
        streams=streams,
        fstab=fstab,
        excluded_disks=tuple(sorted(excluded)),
        excluded_refs=tuple(sorted(_excluded_refs(excluded, fstab))),
        excluded_dirs=excluded_dirs,
        hostnames=opts.hostnames,
        golden_hostname=hostname_file.read_text().strip() if hostname_file.exists() else None,
        bootloader=opts.bootloader,
        compress=opts.compress,
        release_delay=opts.release_delay,
        selinux=tarstream.tar_supports_selinux(),
        notes=tuple(notes),
        reports_before_release=opts.reports_before_release,
    )
    check_copies(plan, opts.root)
    return plan


def _golden_disks(
    opts: CloneOptions,
    mounts: Sequence[Mount],
    by_partition: Mapping[tuple[str, int], Mount],
    excluded: set[str],
    notes: list[str],
) -> list[_Disk]:
    """Golden disks in order (the one holding / first), each with its layout.

    A disk is golden when a filesystem of the tree lives on it, or when --desc names it. A
    --desc DRIVE that matches no disk is applied to the one disk found without a desc when
    that pairing is unambiguous; when the tree is a plain directory (no disk at all) the
    desc alone defines a disk of that name.
    """
    found: list[str] = []
    for (disk, _n), _m in sorted(by_partition.items(), key=lambda kv: kv[1].mountpoint):
        if disk not in found and disk not in excluded:
            found.append(disk)
    descs = {short(k): v for k, v in opts.descs.items()}
    device_of = {name: f"/dev/{name}" for name in found}
    names = list(found)
    unmatched = [d for d in descs if d not in found]
    without_desc = [f for f in found if f not in descs]
    # A desc for a disk that holds none of the tree binds to the real /dev/DRIVE only when
    # the tree is on disks at all, or when --raw/--mbr read from it.
    needs_device = {short(r).rstrip("0123456789").removesuffix("p") for r in opts.raws}
    needs_device |= {short(r).split(":")[0] for r in opts.raws} | {short(m) for m in opts.mbr}
    for drive in unmatched:
        real = os.path.exists(f"/dev/{drive}") and partition_of(f"/dev/{drive}") is None
        if real and (found or drive in needs_device):
            names.append(drive)
            device_of[drive] = f"/dev/{drive}"
        elif len(unmatched) == 1 and len(without_desc) == 1:
            disk = without_desc[0]
            names[names.index(disk)] = drive
            device_of[drive] = device_of.pop(disk)
            notes.append(f"--desc {drive}: applied to golden disk {disk}, the only one found")
        elif not found:
            names.append(drive)
        else:
            raise UsageError(
                f"--desc {drive}: not a disk of the golden tree",
                hint="golden disks: " + ", ".join(found),
            )
    out: list[_Disk] = []
    for name in names:
        device = device_of.get(name)
        if name in descs:
            path = descs[name]
            try:
                text = Path(path).read_text()
            except OSError as e:
                raise UsageError(f"--desc {name} {path}: {e.strerror}") from e
            out.append(_Disk(name, device, parse_desc(text, path), probed=False))
        elif device:
            from ka.disk import probe

            layouts = probe([device])
            out.append(_Disk(name, device, layouts[device], probed=True))
    if not out:
        raise UsageError(
            f"no golden disk found under {opts.root}",
            hint="give the layout with --desc DRIVE FILE (the tree may be a plain directory)",
        )
    return out


def device_aliases(fstab: str, device: str | None,
                   resolve: Callable[[str], str] = os.path.realpath) -> tuple[str, ...]:
    """fstab device fields other than `device` that lead to it (udev's by-id, by-path links):
    names of this machine's hardware that mean nothing on a node."""
    if device is None:
        return ()
    target = resolve(device)
    out = []
    for spec, _mp, _fstype in fstab_entries(fstab):
        if (spec.startswith("/dev/") and spec != device and spec not in out
                and not spec.startswith(IDENTITY_DIRS) and resolve(spec) == target):
            out.append(spec)
    return tuple(out)


def _fstab_mountpoint(fstab: str, ident: BlockIdentity, device: str | None) -> str | None:
    for spec, mp, _fstype in fstab_entries(fstab):
        key, _, value = spec.partition("=")
        value = value.strip("\"'")
        if (
            (key.upper() == "UUID" and ident.uuid and value.lower() == ident.uuid.lower())
            or (key.upper() == "LABEL" and ident.label and value == ident.label)
            or (key.upper() == "PARTUUID" and ident.partuuid
                and value.lower() == ident.partuuid.lower())
            or (device and spec.startswith("/dev/")
                and os.path.realpath(spec) == os.path.realpath(device))
        ):
            return mp if mp.startswith("/") else None
    return None


def _streams(
    prefix: str,
    partitions: Sequence[GoldenPartition],
    excluded_dirs: Sequence[ExcludedDir],
    patterns: Sequence[str],
) -> tuple[Stream, ...]:
    tar = sorted(
        (p for p in partitions if p.content == "tar"),
        key=lambda p: ((p.mountpoint or "").count("/"), p.mountpoint or ""),
    )
    all_mps = [p.mountpoint for p in partitions if p.mountpoint]
    recreated = {d.path for d in excluded_dirs}
    globs = [p for p in patterns if "/" + p.strip("/") not in recreated]
    out: list[Stream] = []
    for i, p in enumerate(tar, 1):
        assert p.mountpoint
        ex = tarstream.nested_excludes(p.mountpoint, all_mps, [d.path for d in excluded_dirs])
        ex += tarstream.nested_excludes(p.mountpoint, [], globs)
        out.append(Stream(f"{prefix}-fs-{i}", "tar", p.disk, p.number, p.mountpoint, tuple(ex)))
    for i, p in enumerate((p for p in partitions if p.content == "raw"), 1):
        size = _disk_size(p.device, required=True)
        out.append(Stream(f"{prefix}-raw-{i}", "raw", p.disk, p.number, p.mountpoint, (), size))
    return tuple(out)


def _excluded_dirs(root: str, paths: Sequence[str], notes: list[str]) -> tuple[ExcludedDir, ...]:
    out = []
    for path in paths:
        clean = "/" + path.strip("/")
        full = root.rstrip("/") + clean
        try:
            st = os.lstat(full)
        except OSError:
            notes.append(f"--exclude {path}: not found in the golden tree (pattern only)")
            continue
        if not os.path.isdir(full) or os.path.islink(full):
            notes.append(f"--exclude {path}: not a directory, left out without re-creation")
            continue
        out.append(ExcludedDir(clean, st.st_mode & 0o7777, st.st_uid, st.st_gid))
    return tuple(out)


def _excluded_refs(excluded: set[str], fstab: str) -> set[str]:
    """fstab device fields that name a partition of an excluded disk."""
    refs: set[str] = set()
    for disk in excluded:
        sys_dir = Path(SYS_BLOCK, disk)
        for part in sorted(sys_dir.glob(f"{disk}*")) if sys_dir.exists() else []:
            dev = f"/dev/{part.name}"
            ident = blkid(dev) if os.path.exists(dev) else BlockIdentity()
            refs.update(x for x in (dev, ident.uuid, ident.partuuid, ident.label) if x)
        for spec, _mp, _t in fstab_entries(fstab):
            if spec.startswith(f"/dev/{disk}"):
                refs.add(spec)
    return refs


def _disk_size(device: str | None, *, required: bool = False) -> int:
    """The size of `device` in bytes; 0 when unknown (a plain tree cloned from a desc alone).

    A raw stream must know its size (the nodes check it fits), so there it is `required`.
    """
    try:
        if not device:
            raise FileNotFoundError("no device")
        with open(device, "rb") as f:
            return f.seek(0, os.SEEK_END)
    except OSError as e:
        if required:
            raise KaError(f"cannot read the size of {device}: {e.strerror or e}",
                          hint="a --raw partition must be a readable block device") from e
        return 0


def _boot_code(opts: CloneOptions, disk: _Disk) -> bytes | None:
    files = {short(k): v for k, v in opts.mbr_files.items()}
    if disk.name in files:
        try:
            with open(files[disk.name], "rb") as f:
                data = f.read(MBR_BOOT_CODE)
        except OSError as e:
            raise UsageError(f"--mbr-file {disk.name} {files[disk.name]}: {e.strerror}") from e
        if len(data) < MBR_BOOT_CODE:
            raise UsageError(
                f"--mbr-file {disk.name} {files[disk.name]}: {len(data)} bytes, "
                f"need at least {MBR_BOOT_CODE} (the boot code)"
            )
        return data[:MBR_BOOT_CODE]
    if disk.name in {short(m) for m in opts.mbr}:
        if not disk.device:
            raise UsageError(f"--mbr {disk.name}: no such disk on this machine")
        try:
            with open(disk.device, "rb") as f:
                return f.read(MBR_BOOT_CODE)
        except OSError as e:
            raise UsageError(f"--mbr {disk.name}: cannot read {disk.device}: {e.strerror}",
                             hint="reading a disk needs root") from e
    return None


def check_disk_options(opts: CloneOptions, plan: ClonePlan) -> None:
    names = {d.name for d in plan.disks}
    for flag, values in (("--mbr", opts.mbr), ("--mbr-file", tuple(opts.mbr_files))):
        for v in values:
            if short(v) not in names:
                raise UsageError(f"{flag} {v}: not a golden disk", hint="golden disks: "
                                 + ", ".join(sorted(names)))

