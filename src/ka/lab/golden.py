"""The golden tree: a populated root filesystem that exercises everything a clone must keep.

`build_tree` works on any directory. The kinds that need privileges (device nodes, foreign
owners, file capabilities) are made only when running as root; `GoldenTree.kinds` says which
kinds a tree holds, so a verifier or a test knows what it is checking.

File contents are deterministic (BLAKE3 extendable output of a seed and the path), so two
builds with the same spec are identical and a corrupted byte is always noticed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from ka.run import run

MiB = 1024 * 1024

# Files the clone fix-ups rewrite on every node (paths relative to the tree root).
IDENTITY_FILES = (
    "etc/fstab",
    "etc/machine-id",
    "etc/hostname",
    "etc/hosts",
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_rsa_key.pub",
    "etc/ssh/ssh_host_ecdsa_key",
    "etc/ssh/ssh_host_ecdsa_key.pub",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
)

# Files the fix-ups remove: persistent network rules and DHCP leases.
REMOVED_BY_FIXUPS = (
    "etc/udev/rules.d/70-persistent-net.rules",
    "var/lib/dhcp/dhclient.eth0.leases",
)

# A fixed timestamp (2024-01-02 03:04:05 UTC) so that mtimes can be compared when asked.
FIXED_MTIME = 1704164645

ODD_UID, ODD_GID = 4242, 4343


@dataclass(frozen=True)
class GoldenSpec:
    """What to put in the golden tree. Sizes are in bytes."""

    data_bytes: int = 128 * MiB       # regular file data in total, about
    small_files: int = 3000           # many small files (0..8 KiB each)
    sparse_apparent: int = 256 * MiB  # apparent size of the sparse file
    hostname: str = "golden"
    seed: bytes = b"ka-golden"
    privileged: bool | None = None    # None: decide from the effective uid


@dataclass(frozen=True)
class FstabEntry:
    spec: str          # UUID=..., LABEL=..., /dev/..., tmpfs
    mountpoint: str
    fstype: str
    options: str = "defaults"
    dump: int = 0
    passno: int = 0

    def line(self) -> str:
        return (
            f"{self.spec}\t{self.mountpoint}\t{self.fstype}\t{self.options}\t"
            f"{self.dump} {self.passno}"
        )


@dataclass(frozen=True)
class GoldenTree:
    root: Path
    spec: GoldenSpec
    kinds: frozenset[str]
    files: int
    data_bytes: int
    large_files: tuple[str, ...] = field(default=())


def content(seed: bytes, path: str, size: int, offset: int = 0) -> bytes:
    """Deterministic pseudo-random bytes of one file."""
    return blake3.blake3(seed + b"\0" + path.encode()).digest(length=size, seek=offset)


class _Builder:
    def __init__(self, root: Path, spec: GoldenSpec) -> None:
        self.root = root
        self.spec = spec
        self.privileged = os.geteuid() == 0 if spec.privileged is None else spec.privileged
        self.kinds: set[str] = set()
        self.files = 0
        self.data = 0
        self.large: list[str] = []

    def path(self, rel: str) -> Path:
        return self.root / rel

    def dir(self, rel: str, mode: int = 0o755) -> Path:
        p = self.path(rel)
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)
        return p

    def file(self, rel: str, size: int | None = None, data: bytes | None = None,
             mode: int = 0o644) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = content(self.spec.seed, rel, size or 0)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        self.files += 1
        self.data += len(data)
        return p

    def big_file(self, rel: str, size: int) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        chunk = 4 * MiB
        with open(p, "wb") as f:
            for off in range(0, size, chunk):
                f.write(content(self.spec.seed, rel, min(chunk, size - off), off))
        self.files += 1
        self.data += size
        self.large.append(rel)


def build_tree(root: str | os.PathLike[str], spec: GoldenSpec | None = None) -> GoldenTree:
    """Populate `root` (created if missing; should be empty) with the golden tree."""
    spec = spec or GoldenSpec()
    b = _Builder(Path(root), spec)
    b.root.mkdir(parents=True, exist_ok=True)
    _system_dirs(b)
    _identity(b)
    _small_files(b)
    _special_modes(b)
    _links(b)
    _names(b)
    _extended_attributes(b)
    _sparse(b)
    if b.privileged:
        _devices(b)
        _owners(b)
        _capabilities(b)
    rest = spec.data_bytes - b.data
    if rest > 0:
        # Two large files: one on / and one on /var, so both filesystems carry bulk data.
        b.big_file("opt/data/large.bin", rest - rest // 4)
        b.big_file("var/lib/images/disk-image.raw", rest // 4)
    _fix_times(b.root)
    return GoldenTree(b.root, spec, frozenset(b.kinds), b.files, b.data, tuple(b.large))


def _system_dirs(b: _Builder) -> None:
    for d in ("boot/efi", "proc", "sys", "dev", "run", "mnt", "media", "srv/empty",
              "home/empty/nested/deeper", "var/log", "var/cache/apt", "var/lib/dpkg", "root",
              "usr/bin", "usr/lib", "usr/share/doc", "opt/data"):
        b.dir(d)
    os.chmod(b.path("root"), 0o700)
    b.kinds.add("empty-dir")


def _identity(b: _Builder) -> None:
    b.file("etc/hostname", data=f"{b.spec.hostname}\n".encode())
    mid = blake3.blake3(b.spec.seed + b"machine-id").hexdigest(length=16)
    b.file("etc/machine-id", data=f"{mid}\n".encode(), mode=0o444)
    b.file("etc/hosts", data=f"127.0.0.1\tlocalhost\n127.0.1.1\t{b.spec.hostname}\n".encode())
    b.file("etc/os-release", data=b'NAME="ka golden"\nID=kagolden\nVERSION_ID=1\n')
    b.file("etc/fstab", data=b"# filled in once the golden disk is formatted\n")
    b.dir("etc/ssh")
    for kind in ("rsa", "ecdsa", "ed25519"):
        key = content(b.spec.seed, f"hostkey-{kind}", 48).hex()
        b.file(f"etc/ssh/ssh_host_{kind}_key", mode=0o600,
               data=f"-----BEGIN OPENSSH PRIVATE KEY-----\n{key}\n"
                    "-----END OPENSSH PRIVATE KEY-----\n".encode())
        b.file(f"etc/ssh/ssh_host_{kind}_key.pub",
               data=f"ssh-{kind} {key[:40]} root@{b.spec.hostname}\n".encode())
    b.file("etc/ssh/sshd_config", data=b"PermitRootLogin prohibit-password\n")
    b.file(REMOVED_BY_FIXUPS[0], data=b'SUBSYSTEM=="net", ATTR{address}=="52:54:00:12:34:56", '
                                      b'NAME="eth0"\n')
    b.file(REMOVED_BY_FIXUPS[1], data=b"lease { fixed-address 192.0.2.10; }\n")
    b.kinds.add("identity")


def _small_files(b: _Builder) -> None:
    n = b.spec.small_files
    for i in range(n):
        # Sizes spread over 0..8 KiB, with some exact block multiples and empty files.
        size = (i * 2654435761) % 8193 if i % 17 else (4096 if i % 2 else 0)
        b.file(f"usr/share/doc/pkg{i // 50:03d}/file{i % 50:02d}.txt", size)
    for i in range(max(1, n // 20)):
        b.file(f"var/log/app/log{i:03d}.log", (i * 7919) % 4097)
    b.kinds.add("small-files")


def _special_modes(b: _Builder) -> None:
    b.file("usr/bin/su", 20000, mode=0o4755)
    b.file("usr/bin/wall", 12000, mode=0o2755)
    b.file("usr/bin/both", 3000, mode=0o6750)
    b.file("usr/bin/true", 1000, mode=0o755)
    b.dir("tmp", 0o1777)
    b.dir("var/tmp", 0o1777)
    b.dir("srv/shared", 0o3775)
    b.file("etc/shadow", 300, mode=0o640)
    if b.privileged:
        b.file("etc/unreadable", 10, mode=0o000)
    b.kinds.update({"setuid", "setgid", "sticky"})


def _links(b: _Builder) -> None:
    b.file("usr/bin/python3.11", 50000, mode=0o755)
    os.link(b.path("usr/bin/python3.11"), b.path("usr/bin/python3"))
    b.file("usr/lib/libshared.so.1", 30000)
    for name in ("usr/lib/libshared.so.1.0", "opt/data/libshared-copy"):
        os.link(b.path("usr/lib/libshared.so.1"), b.path(name))
    b.file("var/lib/dpkg/status", 9000)
    os.link(b.path("var/lib/dpkg/status"), b.path("var/lib/dpkg/status-old"))
    b.kinds.add("hardlink")
    os.symlink("/usr/bin/python3", b.path("usr/bin/python"))
    os.symlink("usr/bin", b.path("bin"))
    os.symlink("../share/doc", b.path("usr/lib/doc-link"))
    os.symlink("/nonexistent/target", b.path("etc/dangling"))
    os.symlink("pkg000/file01.txt", b.path("usr/share/doc/relative-link"))
    os.symlink("../run", b.path("var/run"))
    b.kinds.update({"symlink", "symlink-dangling"})


def _names(b: _Builder) -> None:
    for rel in ("home/user/héllo wörld.txt", "home/user/日本語/ファイル.txt",
                "home/user/emoji 🐧 penguin", "home/user/-leading-dash",
                "home/user/quote's \"double\"", "home/user/tab\tin name",
                "home/user/back\\slash", "home/user/trailing space "):
        b.file(rel, 123 + len(rel))
    b.kinds.add("non-ascii")


def _extended_attributes(b: _Builder) -> None:
    os.setxattr(b.path("etc/os-release"), "user.comment", b"golden release file")
    os.setxattr(b.path("usr/bin/true"), "user.binary", bytes(range(256)))
    os.setxattr(b.path("home/user"), "user.dir-attr", b"on a directory")
    os.setxattr(b.path("home/user/héllo wörld.txt"), "user.ünïcode", "välue".encode())
    b.kinds.add("xattr")
    b.file("srv/shared/acl-file", 500, mode=0o640)
    run(["setfacl", "-m", "u:1234:rw,g:2345:r", str(b.path("srv/shared/acl-file"))])
    run(["setfacl", "-d", "-m", "u:1234:rwx,g::r-x,o::-", str(b.path("srv/shared"))])
    run(["setfacl", "-m", "u:1234:rwx", str(b.path("srv/shared"))])
    b.kinds.add("acl")


def _sparse(b: _Builder) -> None:
    p = b.path("var/lib/sparse.img")
    size = b.spec.sparse_apparent
    with open(p, "wb") as f:
        for off in (0, size // 3, size - 65536):
            f.seek(off)
            f.write(content(b.spec.seed, f"sparse{off}", 65536))
        f.truncate(size)
    b.files += 1
    b.data += 3 * 65536
    b.kinds.add("sparse")


def _devices(b: _Builder) -> None:
    devices = (("dev/null", stat.S_IFCHR, 1, 3), ("dev/zero", stat.S_IFCHR, 1, 5),
               ("dev/loop0", stat.S_IFBLK, 7, 0), ("dev/sda1", stat.S_IFBLK, 8, 1))
    for rel, kind, major, minor in devices:
        os.mknod(b.path(rel), kind | 0o660, os.makedev(major, minor))
    os.mkfifo(b.path("run/initctl"), 0o600)
    os.mkfifo(b.path("var/lib/fifo"), 0o644)
    b.kinds.update({"device", "fifo"})


def _owners(b: _Builder) -> None:
    for rel in ("home/user", "home/user/héllo wörld.txt", "home/user/日本語"):
        os.chown(b.path(rel), ODD_UID, ODD_GID)
    os.chown(b.path("usr/bin/wall"), 0, 5)
    os.chown(b.path("srv/empty"), 65000, 65001)
    os.lchown(b.path("etc/dangling"), 1234, 2345)
    b.kinds.add("owner")


def _capabilities(b: _Builder) -> None:
    b.file("usr/bin/ping", 8000, mode=0o755)
    run(["setcap", "cap_net_raw+ep", str(b.path("usr/bin/ping"))])
    b.kinds.add("capability")


def _fix_times(root: Path) -> None:
    # Bottom-up so that setting a file's time does not bump its directory's afterwards.
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME),
                     follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def esp_files(seed: bytes = GoldenSpec.seed) -> dict[str, bytes]:
    """The files of the golden EFI system partition (vfat: put there with mtools)."""
    names = ("EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi", "EFI/debian/grub.cfg")
    return {n: content(seed, "esp/" + n, 40000 if n.endswith(".EFI") else 300) for n in names}


def write_fstab(root: str | os.PathLike[str], entries: Sequence[FstabEntry]) -> str:
    """Write the golden tree's /etc/fstab; returns the text written."""
    lines = ["# /etc/fstab of the ka golden tree",
             "# <spec> <mount> <type> <options> <dump> <pass>"]
    lines += [e.line() for e in entries]
    lines += ["tmpfs\t/run/shm\ttmpfs\tnosuid,nodev\t0 0"]
    text = "\n".join(lines) + "\n"
    path = Path(root, "etc/fstab")
    path.write_text(text)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return text
