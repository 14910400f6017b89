"""The GNU tar command lines that carry one filesystem from the golden node to the nodes.

Both ends use the same metadata options, so what the golden side stores the node side
restores: xattrs (file capabilities live in security.capability), POSIX ACLs, SELinux
labels, numeric owners (the node has no passwd database of the clone), sparse files, hard
links and device nodes (tar's defaults).

POSIX ACLs travel as their xattrs (system.posix_acl_access and _default), which hold numeric
ids, and not with tar's `--acls`, which stores them as text with user and group names: a node
whose own database lacks a name (the boot environment knows only root) cannot parse that text
("Cannot acl_from_text"), so an ACL naming `adm` or `systemd-journal` would depend on luck.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ka import run


def metadata_options(selinux: bool) -> list[str]:
    opts = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
    if selinux:
        opts.append("--selinux")
    return opts


def create_argv(
    source_dir: str, excludes: Sequence[str] = (), *, selinux: bool = True
) -> list[str]:
    """tar that writes the filesystem mounted at `source_dir` to stdout.

    `excludes` are paths relative to `source_dir` ("./tmp"), matched anchored so that
    excluding /tmp never drops /var/tmp; each excluded directory itself is left out too, the
    node re-creates it with its recorded mode and owner.
    """
    argv = [
        "tar",
        "--create",
        "--file=-",
        f"--directory={source_dir}",
        "--one-file-system",
        "--sparse",
        *metadata_options(selinux),
        "--anchored",
        "--no-wildcards-match-slash",
    ]
    for pattern in excludes:
        argv.append(f"--exclude={_relative(pattern)}")
    argv.append(".")
    return argv


def extract_argv(dest_dir: str, *, selinux: bool = True) -> list[str]:
    """tar that restores a stream from stdin under `dest_dir`, exactly (owners, modes, xattrs)."""
    return [
        "tar",
        "--extract",
        "--file=-",
        f"--directory={dest_dir}",
        "--read-full-records",
        "--same-permissions",
        "--same-owner",
        "--delay-directory-restore",
        *metadata_options(selinux),
    ]


def _relative(path: str) -> str:
    path = path.strip()
    if path.startswith("./"):
        return path.rstrip("/") or "."
    return "./" + path.lstrip("/").rstrip("/")


def nested_excludes(
    mountpoint: str, others: Sequence[str], excluded_dirs: Sequence[str]
) -> list[str]:
    """Exclude patterns for the stream of `mountpoint`, relative to it.

    Other cloned mount points below it are left out (their own stream carries them: this
    matters when the golden tree is one filesystem but the clone splits it); so are the
    `--exclude` directories that fall inside it.
    """
    out: list[str] = []
    base = mountpoint.rstrip("/") or "/"
    prefix = base if base == "/" else base + "/"
    # Mount points keep their directory (its mode and owner, and it must exist even where
    # nothing is mounted during the install) and lose their content; --exclude directories
    # go whole, the node re-creates them.
    wanted = [(p, "/*") for p in others] + [(p, "") for p in excluded_dirs]
    for path, suffix in wanted:
        clean = "/" + path.strip("/")
        if clean != base and clean.startswith(prefix):
            pattern = f"./{clean[len(prefix):]}{suffix}"
            if pattern not in out:
                out.append(pattern)
    return [x for x in out if not any(_covered(x, y) for y in out)]


def _covered(x: str, y: str) -> bool:
    """Pattern x adds nothing once y excludes: it lies below y's directory or content."""
    if x == y:
        return False
    if y.endswith("/*"):
        return x.startswith(y[:-1])
    return x.startswith(y + "/")


@functools.cache
def tar_supports_selinux() -> bool:
    """Debian's tar is built with SELinux support; a minimal one may not be."""
    if not run.available("tar"):
        return False
    result = run.run(["tar", "--help"], check=False)
    return "--selinux" in result.stdout
