"""A metadata-aware digest of a directory tree, and a readable diff of two digests.

Every entry records what a clone must keep: type, permission bits (with setuid/setgid/sticky),
numeric owner, size, a BLAKE3 hash of the content, the symlink target, the device numbers,
every extended attribute (which carries POSIX ACLs as `system.posix_acl_*` and file
capabilities as `security.capability`), whether a large file is sparse, and the hard-link
group. Modification times are recorded and compared only when asked.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

import blake3

_CHUNK = 1024 * 1024
# A file counts as sparse when at least half of it is holes (and it is big enough for
# allocation granularity not to matter).
_SPARSE_MIN = 1024 * 1024


@dataclass(frozen=True)
class TreeEntry:
    path: str                               # relative to the tree root, "" for the root
    kind: str                               # file dir symlink char block fifo socket
    mode: int                               # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int                               # regular files only, 0 otherwise
    digest: str                             # BLAKE3 of the content (regular files)
    target: str                             # symlink target
    rdev: tuple[int, int]                   # (major, minor) of device nodes
    xattrs: tuple[tuple[str, str], ...]     # (name, hex value), sorted
    sparse: bool
    links: tuple[str, ...]                  # every path of its hard-link group, sorted
    mtime: int


COMPARED = tuple(f.name for f in fields(TreeEntry) if f.name not in ("path", "mtime"))


@dataclass(frozen=True)
class TreeDigest:
    root: str
    entries: Mapping[str, TreeEntry]

    def summary(self) -> str:
        h = blake3.blake3()
        for path in sorted(self.entries):
            h.update(repr(self.entries[path]).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class TreeDifference:
    path: str
    what: str          # "missing", "extra" or a field name
    expected: str
    actual: str

    def describe(self) -> str:
        if self.what == "missing":
            return f"{self.path!r}: missing in the clone ({self.expected})"
        if self.what == "extra":
            return f"{self.path!r}: only in the clone ({self.actual})"
        return f"{self.path!r}: {self.what} differs: expected {self.expected}, got {self.actual}"


@dataclass(frozen=True)
class TreeDiff:
    differences: tuple[TreeDifference, ...]
    compared: int

    @property
    def ok(self) -> bool:
        return not self.differences

    def describe(self, limit: int = 40) -> str:
        if self.ok:
            return f"{self.compared} entries identical"
        lines = [d.describe() for d in self.differences[:limit]]
        more = len(self.differences) - limit
        if more > 0:
            lines.append(f"... and {more} more differences")
        return "\n".join(lines)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def hash_file(path: str | os.PathLike[str]) -> str:
    h = blake3.blake3()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _xattrs(path: str) -> tuple[tuple[str, str], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False).hex()))
        except OSError:
            continue
    return tuple(out)


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def digest_tree(root: str | os.PathLike[str], *, ignore: Iterable[str] = (),
                prune: Iterable[str] = ()) -> TreeDigest:
    """Digest every entry under `root` (crossing mount points below it).

    `ignore`: glob patterns of relative paths left out of the digest; `prune`: directories
    whose *contents* are left out (the directory itself is kept).
    """
    root = os.fspath(root)
    ignore, prune = tuple(ignore), tuple(prune)
    entries: dict[str, TreeEntry] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    pending: dict[str, tuple[os.stat_result, str, str, str, tuple[tuple[str, str], ...]]] = {}

    def visit(rel: str, full: str) -> bool:
        st = os.lstat(full)
        kind = _kind(st.st_mode)
        digest = hash_file(full) if kind == "file" else ""
        target = os.readlink(full) if kind == "symlink" else ""
        pending[rel] = (st, kind, digest, target, _xattrs(full))
        if kind not in ("dir", "symlink") and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
        return kind == "dir"

    visit("", root)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        if rel_dir and _matches(rel_dir, prune):
            continue
        full_dir = os.path.join(root, rel_dir)
        for name in sorted(os.listdir(full_dir)):
            rel = os.path.join(rel_dir, name) if rel_dir else name
            if _matches(rel, ignore):
                continue
            if visit(rel, os.path.join(full_dir, name)):
                stack.append(rel)

    link_of = {p: tuple(sorted(g)) for g in groups.values() for p in g}
    for rel, (st, kind, digest, target, xattrs) in pending.items():
        size = st.st_size if kind == "file" else 0
        entries[rel] = TreeEntry(
            path=rel, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
            size=size, digest=digest, target=target,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block")
            else (0, 0),
            xattrs=xattrs,
            sparse=kind == "file" and size >= _SPARSE_MIN and st.st_blocks * 512 < size // 2,
            links=link_of.get(rel, ()), mtime=int(st.st_mtime),
        )
    return TreeDigest(root, entries)


def _show(entry: TreeEntry, name: str) -> str:
    value = getattr(entry, name)
    if name == "mode":
        return oct(value)
    if name == "xattrs":
        return ", ".join(f"{k}={v[:32]}{'...' if len(v) > 32 else ''}" for k, v in value) or "none"
    return repr(value)


def compare(expected: TreeDigest, actual: TreeDigest, *, ignore: Iterable[str] = (),
            mtime: bool = False) -> TreeDiff:
    """Every difference between two digests, except in paths matching `ignore`."""
    ignore = tuple(ignore)
    names = COMPARED + (("mtime",) if mtime else ())
    diffs: list[TreeDifference] = []
    compared = 0
    for path in sorted(set(expected.entries) | set(actual.entries)):
        if _matches(path, ignore):
            continue
        e, a = expected.entries.get(path), actual.entries.get(path)
        if a is None and e is not None:
            diffs.append(TreeDifference(path, "missing", e.kind, ""))
            continue
        if e is None and a is not None:
            diffs.append(TreeDifference(path, "extra", "", a.kind))
            continue
        assert e is not None and a is not None
        compared += 1
        for name in names:
            if name == "links":
                # Members of a group that are ignored do not count.
                ev = tuple(p for p in e.links if not _matches(p, ignore))
                av = tuple(p for p in a.links if not _matches(p, ignore))
                if ev != av:
                    diffs.append(TreeDifference(path, name, repr(ev), repr(av)))
            elif getattr(e, name) != getattr(a, name):
                diffs.append(TreeDifference(path, name, _show(e, name), _show(a, name)))
    return TreeDiff(tuple(diffs), compared)

