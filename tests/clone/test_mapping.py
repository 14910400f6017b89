"""Which local disk gets which golden disk, and why a disk is refused."""

from __future__ import annotations

import pytest

from ka.clone.mapping import (
    DiskMappingError,
    LocalDisk,
    disks_from_lsblk,
    map_disks,
    parse_disk_options,
)
from ka.clone.nodedisks import fits
from ka.clone.plan import ClonePlan, GoldenDisk, GoldenPartition, Stream
from ka.errors import UsageError

MiB = 1 << 20
DESC = "label gpt\nlinux 100MiB fs=ext4 mount=/\nlinux fill fs=ext4 mount=/srv\n"


def plan(*disks: GoldenDisk, parts: tuple[GoldenPartition, ...] = (),
         streams: tuple[Stream, ...] = ()) -> ClonePlan:
    return ClonePlan("ka", 1, disks, parts, streams, "")


def by_size(minimum: int):  # type: ignore[no-untyped-def]
    return lambda g, size: None if size >= minimum else f"needs {minimum >> 20} MiB"


def test_golden_disks_take_free_disks_in_order() -> None:
    p = plan(GoldenDisk("sda", DESC), GoldenDisk("sdb", DESC))
    local = [LocalDisk("/dev/vda", 50 * MiB), LocalDisk("/dev/vdb", 500 * MiB, in_use=True),
             LocalDisk("/dev/vdc", 300 * MiB), LocalDisk("/dev/vdd", 300 * MiB, removable=True),
             LocalDisk("/dev/vde", 400 * MiB)]
    out = map_disks(p, local, {}, by_size(200 * MiB))
    assert [(a.golden, a.device) for a in out] == [("sda", "/dev/vdc"), ("sdb", "/dev/vde")]


def test_no_fitting_disk_gives_every_reason() -> None:
    p = plan(GoldenDisk("sda", DESC))
    local = [LocalDisk("/dev/vda", 50 * MiB), LocalDisk("/dev/vdb", 500 * MiB, in_use=True)]
    with pytest.raises(DiskMappingError) as e:
        map_disks(p, local, {}, by_size(200 * MiB))
    text = str(e.value)
    assert "/dev/vda (50 MiB) is too small: needs 200 MiB" in text
    assert "/dev/vdb is in use" in text


def test_given_disk_is_used_and_still_checked() -> None:
    p = plan(GoldenDisk("sda", DESC), GoldenDisk("sdb", DESC))
    local = [LocalDisk("/dev/vda", 300 * MiB), LocalDisk("/dev/vdb", 300 * MiB)]
    out = map_disks(p, local, {"sda": "/dev/vdb"}, by_size(200 * MiB))
    assert [(a.golden, a.device) for a in out] == [("sda", "/dev/vdb"), ("sdb", "/dev/vda")]
    with pytest.raises(DiskMappingError, match="too small for golden disk sda"):
        map_disks(p, [LocalDisk("/dev/vda", 10 * MiB)], {"sda": "/dev/vda"}, by_size(20 * MiB))
    with pytest.raises(DiskMappingError, match="no such block device"):
        map_disks(p, local, {"sda": "/dev/nope"}, by_size(1))
    with pytest.raises(DiskMappingError, match="mounted"):
        map_disks(p, [LocalDisk("/dev/vda", 300 * MiB, in_use=True)], {"sda": "/dev/vda"},
                  by_size(1))


def test_unknown_golden_disk_in_disk_option() -> None:
    with pytest.raises(UsageError, match="sdz"):
        map_disks(plan(GoldenDisk("sda", DESC)), [], {"sdz": "/dev/vda"}, by_size(1))


def test_parse_disk_options() -> None:
    assert parse_disk_options(["sda=/dev/vda", "/dev/loop3=/dev/loop9"]) == {
        "sda": "/dev/vda", "loop3": "/dev/loop9"}
    with pytest.raises(UsageError):
        parse_disk_options(["sda"])


def test_disks_from_lsblk_marks_disks_in_use() -> None:
    data = {"blockdevices": [
        {"name": "sda", "path": "/dev/sda", "size": 1000, "type": "disk", "ro": False,
         "rm": False, "mountpoint": None,
         "children": [{"name": "sda1", "type": "part", "mountpoint": "/"}]},
        {"name": "sdb", "path": "/dev/sdb", "size": 2000, "type": "disk", "ro": False,
         "rm": False, "mountpoint": None,
         "children": [{"name": "sdb1", "type": "part", "mountpoint": "[SWAP]"}]},
        {"name": "vda", "path": "/dev/vda", "size": 3000, "type": "disk", "ro": False,
         "rm": True, "mountpoint": None},
        {"name": "loop3", "path": "/dev/loop3", "size": 4000, "type": "loop", "ro": False,
         "rm": False, "mountpoint": None},
        {"name": "loop4", "path": "/dev/loop4", "size": 5000, "type": "loop", "ro": False,
         "rm": False, "mountpoint": None},
    ]}
    disks = disks_from_lsblk(data, ["/dev/loop4"])
    assert [(d.device, d.size, d.in_use, d.removable) for d in disks] == [
        ("/dev/loop4", 5000, False, False), ("/dev/sda", 1000, True, False),
        ("/dev/sdb", 2000, True, False), ("/dev/vda", 3000, False, True)]


def test_fits_checks_layout_and_data() -> None:
    golden = GoldenDisk("sda", DESC)
    parts = (GoldenPartition("sda", 1, "ext4", "/", used=80 * MiB, content="tar"),
             GoldenPartition("sda", 2, "ext4", "/srv", used=150 * MiB, content="tar"))
    p = plan(golden, parts=parts)
    assert fits(golden, 400 * MiB, p) is None
    reason = fits(golden, 200 * MiB, p)
    # /srv gets the 99 MiB that the 100 MiB / leaves of 200 MiB.
    assert reason is not None and reason.startswith(
        "needs at least 173 MiB for /srv, the layout gives 98 MiB (150 MiB on the golden node")
    reason = fits(golden, 50 * MiB, p)
    assert reason is not None and "only 48.98 MiB are left on the disk" in reason
    # 90 MiB is less than 100 MiB, but not less than what a 100 MiB ext4 leaves for data.
    tight = (GoldenPartition("sda", 1, "ext4", "/", used=90 * MiB, content="tar"),)
    reason = fits(golden, 400 * MiB, plan(golden, parts=tight))
    assert reason is not None and reason.startswith("needs at least 105 MiB for /, the layout "
                                                     "gives 100 MiB")


def test_fits_counts_the_inodes_of_ext() -> None:
    golden = GoldenDisk("sda", DESC)
    # 30 MiB in 40,000 files fit a 100 MiB / by bytes, not by inodes (one per 4 KiB there).
    many = (GoldenPartition("sda", 1, "ext4", "/", used=30 * MiB, inodes=40_000,
                            content="tar"),)
    reason = fits(golden, 400 * MiB, plan(golden, parts=many))
    assert reason is not None and "for /, the layout gives 100 MiB" in reason
    assert "in 40000 files" in reason
    as_xfs = (GoldenPartition("sda", 1, "xfs", "/", used=30 * MiB, inodes=40_000,
                              content="tar"),)
    assert fits(GoldenDisk("sda", DESC.replace("100MiB fs=ext4", "400MiB fs=xfs")), 900 * MiB,
                plan(golden, parts=as_xfs)) is None


def test_fits_checks_raw_partitions() -> None:
    golden = GoldenDisk("sda", DESC)
    raw = (Stream("ka-raw-1", "raw", "sda", 1, None, (), 120 * MiB),)
    reason = fits(golden, 400 * MiB, plan(golden, streams=raw))
    assert reason is not None and "raw partition 1 needs 120 MiB" in reason
