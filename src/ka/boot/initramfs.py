"""An initramfs as data: entries collected from the host, written as a newc cpio archive.

The kernel unpacks an initramfs in archive order and does not create missing parent
directories, so every entry's parents are listed before it (sorting by path does that). Device
nodes are written as headers only, which needs no root; mtimes are fixed, so the same input
gives the same archive.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ka.errors import KaError

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class InitramfsError(KaError):
    """The boot environment cannot be assembled from this machine's files."""


@dataclass(frozen=True)
class Entry:
    """One archive member: `source` (a host file) or `data` for files; `target` for symlinks."""

    path: str  # absolute, inside the initramfs
    mode: int  # full st_mode, type bits included
    source: str | None = None
    data: bytes | None = None
    target: str | None = None
    rdev: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> str:
        return {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
                stat.S_IFCHR: "char"}.get(stat.S_IFMT(self.mode), "other")


class FileTree:
    """The set of initramfs entries, added from host paths or given content."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _put(self, entry: Entry) -> None:
        old = self.entries.get(entry.path)
        if old is not None and old.kind != entry.kind:
            raise InitramfsError(f"{entry.path} is both a {old.kind} and a {entry.kind} in the "
                                 "initramfs")
        if old is None or entry.kind != "dir":
            self.entries[entry.path] = entry
        self._parents(entry.path)

    def _parents(self, path: str) -> None:
        parent = os.path.dirname(path)
        while parent != "/" and parent not in self.entries:
            self.entries[parent] = Entry(parent, stat.S_IFDIR | 0o755)
            parent = os.path.dirname(parent)

    def directory(self, path: str, mode: int = 0o755) -> None:
        self._put(Entry(path, stat.S_IFDIR | mode))

    def text(self, path: str, text: str, mode: int = 0o644) -> None:
        self._put(Entry(path, stat.S_IFREG | mode, data=text.encode()))

    def blob(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._put(Entry(path, stat.S_IFREG | mode, data=data))

    def symlink(self, path: str, target: str) -> None:
        self._put(Entry(path, stat.S_IFLNK | 0o777, target=target))

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._put(Entry(path, stat.S_IFCHR | mode, rdev=(major, minor)))

    def copy(self, source: str, path: str | None = None) -> None:
        """Add the host file `source` (followed through symlinks) at `path` (default: same)."""
        st = os.stat(source)
        if not stat.S_ISREG(st.st_mode):
            raise InitramfsError(f"{source} is not a regular file")
        self._put(Entry(path or source, stat.S_IFREG | stat.S_IMODE(st.st_mode), source=source))

    def add_host_path(self, path: str, _depth: int = 0) -> None:
        """Add `path` as the host has it: every symlink on the way becomes a symlink entry.

        So /lib/x86_64-linux-gnu/libc.so.6 on a merged-/usr system adds `/lib -> usr/lib` and
        the file under /usr/lib, and the dynamic loader finds the library by either name.
        """
        if _depth > 40:
            raise InitramfsError(f"too many symbolic links resolving {path}")
        current = "/"
        parts = [p for p in os.path.normpath(path).split("/") if p]
        for i, part in enumerate(parts):
            candidate = os.path.join(current, part)
            if os.path.islink(candidate):
                target = os.readlink(candidate)
                self.symlink(candidate, target)
                resolved = os.path.normpath(os.path.join(current, target))
                rest = parts[i + 1:]
                self.add_host_path(os.path.join(resolved, *rest) if rest else resolved,
                                   _depth + 1)
                return
            current = candidate
        if os.path.isdir(current):
            self.directory(current)
        else:
            self.copy(current)

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[p] for p in sorted(self.entries)]


def write_newc(entries: Iterable[Entry], out: BinaryIO, mtime: int = 0) -> int:
    """Write a newc cpio archive; return its size in bytes."""
    written = 0
    ino = 1

    def emit(name: str, mode: int, data: bytes | None, source: str | None,
             rdev: tuple[int, int], number: int) -> int:
        size = len(data) if data is not None else (os.path.getsize(source) if source else 0)
        encoded = name.encode() + b"\0"
        fields = (number, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, mtime, size,
                  0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
        count = _padded(out, header + encoded)
        if source is not None and data is None:
            with open(source, "rb") as f:
                copied = 0
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                    copied += len(chunk)
            if copied != size:
                raise InitramfsError(f"{source} changed size while being archived")
            count += copied + _pad(out, copied)
        elif data is not None:
            count += _padded(out, data)
        return count

    for e in entries:
        name = e.path.lstrip("/")
        payload = e.target.encode() if e.target is not None else e.data
        written += emit(name, e.mode, payload, e.source, e.rdev, ino)
        ino += 1
    written += emit(TRAILER, 0, b"", None, (0, 0), 0)
    return written


def _padded(out: BinaryIO, data: bytes) -> int:
    out.write(data)
    return len(data) + _pad(out, len(data))


def _pad(out: BinaryIO, length: int) -> int:
    pad = (4 - length % 4) % 4
    out.write(b"\0" * pad)
    return pad


def write_initramfs(tree: FileTree, path: str, compress: bool = True, xz: bool = False) -> int:
    """Write the archive (gzip-compressed unless told not to; with `xz`, in the xz format the
    kernel unpacks: CRC32 check, x86 branch filter); return the file's size."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as raw:
        if compress and xz:
            filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
            with lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                               filters=filters) as packed:
                write_newc(tree.sorted_entries(), packed)  # type: ignore[arg-type]
        elif compress:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6,
                               mtime=0) as gz:
                write_newc(tree.sorted_entries(), gz)  # type: ignore[arg-type]
        else:
            write_newc(tree.sorted_entries(), raw)
    os.replace(tmp, path)
    return os.path.getsize(path)


_LDD_ARROW = re.compile(r"^\s*(\S+) => (\S+) \(0x[0-9a-f]+\)$")
_LDD_DIRECT = re.compile(r"^\s*(/\S+) \(0x[0-9a-f]+\)$")
_LDD_MISSING = re.compile(r"^\s*(\S+) => not found$")


def parse_ldd(text: str) -> set[str]:
    """The library paths in `ldd` output (one or several files); missing ones raise."""
    found: set[str] = set()
    for line in text.splitlines():
        if m := _LDD_MISSING.match(line):
            raise InitramfsError(f"shared library {m.group(1)} was not found on this machine")
        if m := _LDD_ARROW.match(line):
            found.add(m.group(2))
        elif m := _LDD_DIRECT.match(line):
            found.add(m.group(1))
    return found
