"""What a new filesystem can hold: the measured room for data, ext's inodes, the smallest size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ka.disk.capacity import (
    Contents,
    holds,
    inode_count,
    misfit,
    smallest_holding,
    usable_bytes,
)

MiB = 1 << 20
TYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "jfs", "reiserfs", "nilfs2", None)


def test_the_overhead_depends_on_the_type() -> None:
    # A 300 MiB xfs keeps its 81 MiB log, a 32 MiB ext4 a fifth of itself, ext2 no journal.
    assert usable_bytes("xfs", 300 * MiB) // MiB == 219
    assert usable_bytes("ext4", 32 * MiB) // MiB == 25
    assert usable_bytes("ext2", 32 * MiB) // MiB == 29
    assert usable_bytes("btrfs", 128 * MiB) // MiB == 47
    # Between the measured points and past the last one: in proportion.
    assert 229 * MiB < usable_bytes("ext4", 300 * MiB) < 468 * MiB
    assert usable_bytes("xfs", 64 << 30) == pytest.approx((64 << 30) * 16174 / 16384, rel=1e-6)


def test_ext_has_one_inode_per_ratio_and_the_others_as_many_as_needed() -> None:
    assert inode_count("ext4", 256 * MiB) == 256 * MiB // 4096 - 11
    assert inode_count("ext4", 1024 * MiB) == 1024 * MiB // 16384 - 11
    assert inode_count("xfs", 1024 * MiB) is None
    assert inode_count("btrfs", 1024 * MiB) is None


@given(st.sampled_from(TYPES), st.integers(1, 1 << 20), st.integers(1, 1 << 20))
def test_more_room_never_holds_less(fstype: str | None, a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert usable_bytes(fstype, small * MiB) <= usable_bytes(fstype, large * MiB)


@given(st.sampled_from(TYPES), st.integers(0, 1 << 40), st.integers(0, 10_000_000))
def test_the_smallest_size_holds_and_one_mib_less_does_not(
        fstype: str | None, used: int, inodes: int) -> None:
    contents = Contents(fstype, used, inodes)
    need = smallest_holding(contents)
    assert need % MiB == 0
    assert holds(contents, need)
    assert misfit(contents, "/", need) is None
    smaller = need - MiB
    if smaller >= MiB:
        assert not holds(contents, smaller)
        reason = misfit(contents, "/", smaller)
        assert reason is not None
        assert reason.startswith(f"needs at least {need // MiB} MiB for /, the layout gives "
                                 f"{smaller // MiB} MiB")


def test_many_small_files_need_the_room_of_their_inodes() -> None:
    # 100,000 files in 20 MiB: ext4 below 512 MiB has an inode per 4 KiB (about 400 MiB for
    # them); a 600 MiB ext4 has fewer inodes (one per 16 KiB) than a 511 MiB one.
    contents = Contents("ext4", 20 * MiB, 100_000)
    need = smallest_holding(contents)
    assert 390 * MiB < need < 512 * MiB
    assert not holds(contents, 600 * MiB)
    assert holds(Contents("xfs", 20 * MiB, 100_000), 300 * MiB)
