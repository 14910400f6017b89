"""What a new filesystem of a given size can hold, and the smallest one that holds some data.

Pure, no I/O. A filesystem keeps part of its partition for itself (journal, inode tables,
the xfs log, btrfs's duplicated metadata chunks), and how much depends on the type and the
size in ways no formula of a line states well: a 300 MiB xfs keeps 81 MiB (its log), a 32 MiB
ext4 a fifth of itself. So the room for data is read off points measured right after mkfs
with the arguments ka uses (`mkfs_commands`), e2fsprogs 1.47.0, xfsprogs 6.1.0, btrfs-progs
6.2 (statvfs: f_bfree for ext and xfs, since the install runs as root and may use the
reserved blocks; f_bavail for btrfs, whose free data space is what a tar can fill), and
interpolated between them. Newer tools keep about the same; the data margin covers the rest.

ext2/3/4 have a fixed number of inodes, one per `inode_ratio` bytes (mke2fs.conf: 4 KiB below
512 MiB, 16 KiB up to 4 TiB, then 32 and 64 KiB): a tree of many small files can run out of
inodes with bytes to spare. xfs and btrfs make inodes as needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka.sizes import MIB, TIB

# (partition MiB, MiB a tar can fill) right after mkfs.
_MEASURED: dict[str, tuple[tuple[int, float], ...]] = {
    "ext4": ((8, 6.42), (16, 13.73), (32, 25.22), (64, 54.71), (128, 114.44), (256, 229.9),
             (511, 468.69), (513, 487.17), (1024, 973.4), (4096, 3951.7)),
    "ext3": ((8, 6.45), (16, 13.85), (32, 25.58), (64, 54.7), (128, 114.43), (256, 229.88),
             (511, 468.68), (513, 487.52), (1024, 974.6), (4096, 3959.6)),
    "ext2": ((8, 7.45), (16, 14.85), (32, 29.6), (64, 58.71), (128, 118.44), (256, 237.9),
             (511, 476.71), (513, 503.54), (1024, 1006.6), (4096, 4023.7)),
    "xfs": ((300, 219.09), (320, 237.96), (512, 419.02), (1024, 921.03), (4096, 3971.6),
            (16384, 16174.0)),
    "btrfs": ((115, 34.0), (128, 47.0), (256, 175.0), (512, 431.0), (1024, 904.6),
              (4096, 3567.0)),
}
# Not measured (this kernel mounts none of them): their own overhead, as a share and a
# fixed part. vfat: its two FATs; jfs: its log (0.4 % of the partition) and inode maps;
# reiserfs: its 8193-block journal.
_ESTIMATED: dict[str, tuple[float, int]] = {
    "vfat": (0.02, 1 * MIB),
    "jfs": (0.02, 8 * MIB),
    "reiserfs": (0.02, 33 * MIB),
}
# Any other type: what ka asked before it measured anything.
_OTHER_SHARE = 1 / 1.05

# The golden's count of bytes in use is in its own block size, and the clone's files land in
# blocks of another (1 KiB below 512 MiB for ext): a small margin, and a little per file.
DATA_MARGIN = 1.03
PER_FILE = 512
INODE_MARGIN = 1.02
_EXT_RESERVED_INODES = 11


def usable_bytes(fstype: str | None, size: int) -> int:
    """Bytes of data a new `fstype` filesystem of `size` bytes can take."""
    points = _MEASURED.get(fstype or "")
    if points is None:
        share, fixed = _ESTIMATED.get(fstype or "", (1 - _OTHER_SHARE, 0))
        return max(0, int(size * (1 - share)) - fixed)
    mib = size / MIB
    if mib <= points[0][0]:
        return int(size * points[0][1] / points[0][0])
    for (m0, u0), (m1, u1) in zip(points, points[1:], strict=False):
        if mib <= m1:
            return int((u0 + (u1 - u0) * (mib - m0) / (m1 - m0)) * MIB)
    last_m, last_u = points[-1]
    return int(size * last_u / last_m)


def _ext_inode_ratio(size: int) -> int:
    if size < 3 * MIB:
        return 8192
    if size < 512 * MIB:
        return 4096
    if size < 4 * TIB:
        return 16384
    return 32768 if size < 16 * TIB else 65536


def inode_count(fstype: str | None, size: int) -> int | None:
    """Inodes a new filesystem of `size` bytes has for files; None: as many as it needs."""
    if fstype in ("ext2", "ext3", "ext4"):
        return max(0, size // _ext_inode_ratio(size) - _EXT_RESERVED_INODES)
    return None


@dataclass(frozen=True)
class Contents:
    """What one golden filesystem holds, as its statvfs says."""

    fstype: str | None
    used: int  # bytes
    inodes: int = 0  # files, directories, links...; 0: unknown (btrfs counts none)

    @property
    def needed_bytes(self) -> int:
        return int(self.used * DATA_MARGIN) + self.inodes * PER_FILE

    @property
    def needed_inodes(self) -> int:
        return int(self.inodes * INODE_MARGIN)


def holds(contents: Contents, size: int) -> bool:
    """Whether a new filesystem of `size` bytes can take `contents`."""
    if usable_bytes(contents.fstype, size) < contents.needed_bytes:
        return False
    inodes = inode_count(contents.fstype, size)
    return inodes is None or inodes >= contents.needed_inodes


# Sizes at which ext's inode ratio changes: the room for inodes drops there, so the smallest
# size that holds a tree is searched for in each stretch between them.
_BREAKS = (3 * MIB, 512 * MIB, 4 * TIB, 16 * TIB)
_LARGEST = 1 << 56


def smallest_holding(contents: Contents) -> int:
    """The smallest size, in whole MiB, of a new filesystem that can take `contents`."""
    bounds = (MIB, *_BREAKS, _LARGEST)
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        lo_mib, hi_mib = -(-lo // MIB), (hi - 1) // MIB
        if not holds(contents, hi_mib * MIB):
            continue
        while lo_mib < hi_mib:
            mid = (lo_mib + hi_mib) // 2
            if holds(contents, mid * MIB):
                hi_mib = mid
            else:
                lo_mib = mid + 1
        return hi_mib * MIB
    return _LARGEST


def misfit(contents: Contents, mountpoint: str, size: int) -> str | None:
    """Why a partition of `size` bytes cannot take `contents`, in words; None when it can."""
    if holds(contents, size):
        return None
    need = smallest_holding(contents)
    files = f" in {contents.inodes} files" if contents.inodes else ""
    return (f"needs at least {-(-need // MIB)} MiB for {mountpoint}, the layout gives "
            f"{size // MIB} MiB ({contents.used // MIB} MiB{files} on the golden node, "
            f"and {contents.fstype or 'the filesystem'} keeps part of the partition for "
            "itself)")
