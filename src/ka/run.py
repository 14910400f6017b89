"""The one subprocess wrapper of ka.

argv lists only (never a shell string formatted here), a fixed locale, stdin from /dev/null
unless given, a `+ cmd` debug line, and on failure a `CommandError` that shows the
copy-pasteable command, its exit status and the tail of its stderr (of its stdout when it
said nothing on stderr).

Commands that a *user* gives (`ka send --command`) run through `sh -c` by design; they are
passed here as `["sh", "-c", cmd]`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ka.errors import CommandError, ToolMissingError

log = logging.getLogger("ka.run")

# Which Debian package provides each external program ka may run.
PACKAGES: dict[str, str] = {
    "sfdisk": "fdisk",
    "fdisk": "fdisk",
    "lsblk": "util-linux",
    "findmnt": "util-linux",
    "blkid": "util-linux",
    "losetup": "mount",
    "wipefs": "util-linux",
    "partx": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "mkswap": "util-linux",
    "mkfs.ext2": "e2fsprogs",
    "mkfs.ext3": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_admin": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "mkfs.vfat": "dosfstools",
    "mkfs.jfs": "jfsutils",
    "mkfs.reiserfs": "reiserfsprogs",
    "mcopy": "mtools",
    "ip": "iproute2",
    "tc": "iproute2",
    "tar": "tar",
    "dnsmasq": "dnsmasq-base",
    "udp-sender": "udpcast",
    "udp-receiver": "udpcast",
    "setfacl": "acl",
    "getfacl": "acl",
    "setfattr": "attr",
    "setcap": "libcap2-bin",
    "getcap": "libcap2-bin",
    "zstd": "zstd",
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
    "grub-mkimage": "grub-common",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "tftp": "tftp-hpa",
}


def require(tool: str) -> str:
    """Return the full path of `tool`, or raise `ToolMissingError` naming its package."""
    path = shutil.which(tool, path=_search_path())
    if path is None:
        raise ToolMissingError(tool, PACKAGES.get(tool))
    return path


def available(tool: str) -> bool:
    return find(tool) is not None


def find(tool: str) -> str | None:
    """The full path of `tool` where ka would run it from, None when it is not installed."""
    return shutil.which(tool, path=_search_path())


# Searched after $PATH: a user's PATH often lacks the sbin directories where mkfs lives.
SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def _search_path() -> str:
    path = os.environ.get("PATH", "")
    for extra in SYSTEM_DIRS:
        if extra not in path.split(":"):
            path = f"{path}:{extra}" if path else extra
    return path


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    env["PATH"] = _search_path()
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    node: str | None = None,
    hint: str | None = None,
) -> Result:
    """Run `argv` to completion and return its output.

    Raises `CommandError` when it exits non-zero (unless `check=False`) and
    `ToolMissingError` when the program does not exist.
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("empty argv")
    log.debug("+ %s", shlex.join(argv))
    if "/" not in argv[0]:
        require(argv[0])
    stdin: int | None = subprocess.DEVNULL if input is None else None
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.run(
            argv,
            input=data,
            stdin=stdin,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=_environment(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolMissingError(argv[0], PACKAGES.get(os.path.basename(argv[0]))) from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(argv, -1, f"timed out after {timeout} s", node=node, hint=hint) from e
    out = (proc.stdout or b"").decode(errors="replace")
    err = (proc.stderr or b"").decode(errors="replace")
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, err, stdout=out, node=node, hint=hint)
    return Result(argv, proc.returncode, out, err)


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> subprocess.Popen[bytes]:
    """Start `argv` in the background (producer/consumer commands, servers).

    The caller owns the process: it must wait for it and check its status.
    """
    argv = [str(a) for a in argv]
    log.debug("+ %s &", shlex.join(argv))
    if "/" not in argv[0]:
        require(argv[0])
    return subprocess.Popen(
        argv, stdin=stdin, stdout=stdout, stderr=stderr, env=_environment(env), cwd=cwd, **kwargs
    )


def signal_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the process group of a process started here with `start_new_session=True`
    (its pid is the group's id), unless it has ended: it and what it started, nothing else."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def reap_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """Wait `grace` seconds for a signalled process, then SIGKILL its group; its status, or
    None if even SIGKILL has not ended it after another `grace` (stuck in the kernel): the
    caller goes on ending the others instead of failing on this one."""
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("pid %d did not end after SIGKILL within %g s", proc.pid, grace)
        return None
