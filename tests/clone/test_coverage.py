"""A plan that copies nothing, or leaves out a filesystem of the golden's fstab, is refused;
swap, virtual and network filesystems, bind mounts and excluded disks are not its concern."""

from __future__ import annotations

import dataclasses

import pytest

from ka.clone.coverage import check_copies, fstab_filesystems, unheld_filesystems
from ka.clone.plan import ClonePlan, GoldenPartition, Stream
from ka.errors import UsageError

ROOT = GoldenPartition("sda", 1, "ext4", "/", uuid="1111-root", partuuid="aaaa-01",
                       device="/dev/sda1", content="tar",
                       aliases=("/dev/disk/by-id/ata-X-part1",))
SWAP = GoldenPartition("sda", 2, "swap", None, uuid="2222-swap", device="/dev/sda2")
VAR = GoldenPartition("sda", 3, "xfs", "/var", label="var", device="/dev/sda3", content="tar")
STREAMS = (Stream("ka-fs-1", "tar", "sda", 1, "/"), Stream("ka-fs-2", "tar", "sda", 3, "/var"))


def _plan(fstab: str, partitions: tuple[GoldenPartition, ...] = (ROOT, SWAP, VAR),
          streams: tuple[Stream, ...] = STREAMS, excluded_refs: tuple[str, ...] = ()
          ) -> ClonePlan:
    return ClonePlan("ka", 1, (), partitions, streams, fstab, excluded_refs=excluded_refs)


HARMLESS = """\
# everything here is held by the plan, or is no filesystem of a golden disk
UUID=1111-root / ext4 errors=remount-ro 0 1
UUID=1111-root /home ext4 subvol=home 0 2
/dev/disk/by-id/ata-X-part1 /mnt/again ext4 defaults 0 0
LABEL=var /var xfs defaults 0 2
UUID=2222-swap none swap sw 0 0
/dev/sda2 swap swap defaults 0 0
tmpfs /run/shm tmpfs nosuid,nodev 0 0
proc /proc proc defaults 0 0
nas:/export/home /net/home nfs4 defaults 0 0
//server/share /mnt/share cifs credentials=/etc/cred 0 0
/srv/disk.img /mnt/image ext4 loop 0 0
/var/lib/data /data none bind 0 0
/dev/sda9 /srv/data ext4 bind 0 0
/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0
UUID=3333-usb /media/usb ext4 noauto,nofail 0 0
sshfs#me@host:/ /mnt/far fuse defaults 0 0
me@host:/ /mnt/far2 fuse.sshfs defaults 0 0
UUID=4444-other /backup ext4 defaults 0 2
/dev/sdb1 /scratch ext4 defaults 0 2
"""


def test_only_block_filesystems_mounted_at_boot_count() -> None:
    assert fstab_filesystems(HARMLESS) == [
        ("UUID=1111-root", "/"), ("UUID=1111-root", "/home"),
        ("/dev/disk/by-id/ata-X-part1", "/mnt/again"), ("LABEL=var", "/var"),
        ("UUID=4444-other", "/backup"), ("/dev/sdb1", "/scratch"),
    ]


def test_excluded_disks_and_held_filesystems_are_accepted() -> None:
    plan = _plan(HARMLESS, excluded_refs=("/dev/sdb1", "4444-other"))
    assert unheld_filesystems(plan) == []
    check_copies(plan, "/")


def test_a_filesystem_of_another_disk_not_excluded_is_refused() -> None:
    plan = _plan(HARMLESS, excluded_refs=("/dev/sdb1",))
    with pytest.raises(UsageError) as e:
        check_copies(plan, "/")
    assert e.value.message == (
        "the golden's fstab mounts /backup (UUID=4444-other), but no partition of the layout "
        "holds it: the nodes would be cloned without it")
    assert e.value.hint is not None and "--exclude-disk DISK" in e.value.hint


def test_root_unheld_is_refused_even_with_streams() -> None:
    plan = _plan("UUID=9999-elsewhere / ext4 defaults 0 1\nLABEL=var /var xfs defaults 0 2\n",
                 partitions=(dataclasses.replace(ROOT, mountpoint=None), VAR),
                 streams=STREAMS[1:])
    with pytest.raises(UsageError, match=r"fstab mounts / \(UUID=9999-elsewhere\), but"):
        check_copies(plan, "/mnt/golden")


def test_a_plan_without_streams_is_refused() -> None:
    # The document's desc on a plain directory: types and sizes, no filesystem, no mounts.
    nothing = tuple(GoldenPartition("sda", n, fs, None) for n, fs in
                    ((1, None), (5, "swap"), (6, None)))
    with pytest.raises(UsageError) as e:
        check_copies(_plan("", partitions=nothing, streams=()), "/srv/golden")
    assert e.value.message.startswith("the clone plan copies nothing: no partition of the "
                                      "layout holds a filesystem of /srv/golden")
    assert "fstab" not in e.value.message
    assert e.value.hint is not None and "fs= and mount=" in e.value.hint
    with pytest.raises(UsageError, match="copies nothing.*fstab mounts / \\(LABEL=root\\)"):
        check_copies(_plan("LABEL=root / ext4 defaults 0 1\n", partitions=nothing, streams=()),
                     "/srv/golden")
    # even a swap-only fstab: nothing is copied, still refused
    with pytest.raises(UsageError, match="copies nothing"):
        check_copies(_plan("UUID=2222-swap none swap sw 0 0\n", partitions=nothing,
                           streams=()), "/")


def test_a_raw_copy_is_a_copy() -> None:
    raw = GoldenPartition("sda", 1, "jfs", "/", device="/dev/sda1", content="raw")
    plan = _plan("/dev/sda1 / jfs defaults 0 1\n", partitions=(raw,),
                 streams=(Stream("ka-raw-1", "raw", "sda", 1, "/", size=1 << 20),))
    check_copies(plan, "/")

