"""Whether a clone plan copies the golden system at all, checked before any session starts.

A desc gives sizes and types; the filesystems come from the golden's mounts or from the
desc's `fs=` and `mount=`. A desc in the original's own words (`linux 3500`, `extended
fill`, ...) on a golden tree that is a plain directory gives neither: every node would
partition its disk, copy nothing and report success. So a plan is refused when it has no
stream at all, or when a filesystem the golden's fstab mounts is held by no partition of the
plan (the clone would boot without it, or not at all).
"""

from __future__ import annotations

from collections.abc import Iterable

from ka.clone.fstab import IdentityMap, fstab_rows
from ka.clone.plan import ClonePlan, GoldenPartition
from ka.errors import UsageError

# How fstab names a block device; anything else (tmpfs, proc, host:/export, //server/share,
# an image file for a loop mount) is not a filesystem of a golden disk.
_TAGS = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "ID=")
# Filesystem types that never live on a golden partition, whatever the spec says.
_NOT_BLOCK = frozenset({
    "swap", "none", "tmpfs", "ramfs", "proc", "sysfs", "devtmpfs", "devpts", "cgroup",
    "cgroup2", "securityfs", "debugfs", "tracefs", "efivarfs", "hugetlbfs", "mqueue",
    "binfmt_misc", "autofs", "overlay", "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p",
    "virtiofs", "fuse", "sshfs", "glusterfs", "ceph",
})
# Entries that are not mounted at boot (a CD-ROM, a USB disk) or that re-mount a directory.
_SKIP_OPTIONS = frozenset({"noauto", "bind", "rbind"})

HINT = ("give each filesystem in the desc with fs= and mount= (e.g. `linux 3500 fs=ext4 "
        "mount=/`), or clone a mounted golden disk (--root on its mounted tree), whose mounts "
        "say it; leave a filesystem of another disk out with --exclude-disk DISK")


def fstab_filesystems(fstab: str) -> list[tuple[str, str]]:
    """(spec, mount point) of every block filesystem the fstab mounts at boot."""
    out = []
    for spec, mountpoint, fstype, options in fstab_rows(fstab):
        block = spec.startswith("/dev/") or spec.upper().startswith(_TAGS)
        if (not block or not mountpoint.startswith("/")
                or fstype in _NOT_BLOCK or fstype.startswith("fuse.")
                or _SKIP_OPTIONS.intersection(options)):
            continue
        out.append((spec, mountpoint))
    return out


def _holders(partitions: Iterable[GoldenPartition]) -> IdentityMap:
    """Every golden reference of the plan's partitions, each translating to itself: a spec
    that translates names one of them."""
    uuids, partuuids, labels, devices = {}, {}, {}, {}
    for p in partitions:
        if p.uuid:
            uuids[p.uuid] = p.uuid
        if p.partuuid:
            partuuids[p.partuuid] = p.partuuid
        if p.label:
            labels[p.label] = p.label
        for path in (p.device, *p.aliases):
            if path:
                devices[path] = p.uuid or "-"
    return IdentityMap(uuids, partuuids, labels, devices)


def unheld_filesystems(plan: ClonePlan) -> list[tuple[str, str]]:
    """Filesystems of the golden's fstab that no partition of the plan holds, neither by mount
    point nor by identity (a btrfs subvolume shares its filesystem's UUID), leaving out those
    of the disks excluded with --exclude-disk."""
    mountpoints = {p.mountpoint for p in plan.partitions if p.mountpoint}
    holders = _holders(plan.partitions)
    excluded = IdentityMap(commented=frozenset(plan.excluded_refs))
    out = []
    for spec, mountpoint in fstab_filesystems(plan.fstab):
        named = spec.split("/")[-1] if spec.startswith("/dev/disk/by-") else spec
        if mountpoint in mountpoints or holders.translate(spec) is not None:
            continue
        if excluded.is_commented(spec) or named in plan.excluded_refs:
            continue
        out.append((spec, mountpoint))
    return out


def check_copies(plan: ClonePlan, root: str) -> None:
    """Refuse a plan that copies nothing, or that leaves out a filesystem of the golden's
    fstab; raises UsageError with what is missing and how to say it."""
    unheld = unheld_filesystems(plan)
    missing = ", ".join(f"{mp} ({spec})" for spec, mp in unheld)
    if not plan.streams:
        reason = (f"the clone plan copies nothing: no partition of the layout holds a "
                  f"filesystem of {root} and none is copied raw, so every node would format "
                  "its disk empty and report success")
        if unheld:
            reason += f"; the golden's fstab mounts {missing}"
        raise UsageError(reason, hint=HINT)
    if unheld:
        raise UsageError(
            f"the golden's fstab mounts {missing}, but no partition of the layout holds "
            + ("it" if len(unheld) == 1 else "them")
            + ": the nodes would be cloned without " + ("it" if len(unheld) == 1 else "them"),
            hint=HINT,
        )
