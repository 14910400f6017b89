"""Initramfs and bootloader inside the clone: a chroot with /dev, /proc and /sys bound.

Whatever the clone itself uses runs (update-initramfs, dracut or mkinitrd; grub-install
for BIOS and for UEFI with the removable fallback path), never tools of the node's own
boot environment, which may be of another distribution.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ka import run
from ka.errors import KaError

MBR_BOOT_CODE = 440  # bytes before the disk signature and the partition table


class BootloaderError(KaError):
    exit_code = 22


def _find(target: str, names: Sequence[str]) -> str | None:
    """Path inside the clone of the first of `names` found in its sbin/bin directories."""
    for name in names:
        for d in ("usr/sbin", "sbin", "usr/bin", "bin"):
            path = Path(target, d, name)
            # A symlink inside the clone may be absolute (resolves on the host): accept it.
            if path.is_file() or path.is_symlink():
                return f"/{d}/{name}"
    return None


@dataclass(frozen=True)
class BootTools:
    initramfs: tuple[str, ...] | None  # argv inside the chroot, or None
    grub_install: str | None
    grub_mkconfig: str | None
    grub_cfg: str | None  # where the clone keeps grub.cfg


def detect_tools(target: str, kernels: Sequence[str]) -> BootTools:
    initramfs: tuple[str, ...] | None = None
    if tool := _find(target, ["update-initramfs"]):
        initramfs = (tool, "-u", "-k", "all")
    elif tool := _find(target, ["dracut"]):
        initramfs = (tool, "--force", "--regenerate-all")
    elif (tool := _find(target, ["mkinitrd"])) and kernels:
        initramfs = (tool,)
    grub = _find(target, ["grub-install", "grub2-install"])
    mkconfig = _find(target, ["grub-mkconfig", "grub2-mkconfig"])
    cfg = None
    for candidate in ("boot/grub/grub.cfg", "boot/grub2/grub.cfg"):
        if Path(target, candidate).exists() or Path(target, candidate).parent.is_dir():
            cfg = "/" + candidate
            break
    return BootTools(initramfs, grub, mkconfig, cfg)


def kernels(target: str) -> list[str]:
    out: list[str] = []
    for d in ("lib/modules", "usr/lib/modules"):
        base = Path(target, d)
        if base.is_dir() and not base.is_symlink():
            out.extend(sorted(p.name for p in base.iterdir() if p.is_dir()))
    return sorted(set(out))


def grub_install_argvs(
    tool: str, disk: str, *, uefi: bool, bios: bool, esp: str | None
) -> list[list[str]]:
    """grub-install command lines: UEFI to the removable path (no NVRAM: the node's firmware
    variables are not ours to touch from a chroot), BIOS onto the disk itself."""
    argvs = []
    if uefi and esp:
        argvs.append([tool, "--target=x86_64-efi", f"--efi-directory={esp}", "--removable",
                      "--no-nvram", "--recheck"])
    if bios:
        argvs.append([tool, "--target=i386-pc", "--recheck", disk])
    return argvs


@contextlib.contextmanager
def chroot_mounts(target: str) -> Iterator[None]:
    """/dev, /proc and /sys of the node inside the clone, unmounted whatever happens."""
    mounted: list[str] = []
    try:
        for dst, how in (
            ("dev", ["--bind", "/dev"]),
            ("proc", ["-t", "proc", "proc"]),
            ("sys", ["--bind", "/sys"]),
        ):
            path = os.path.join(target, dst)
            os.makedirs(path, exist_ok=True)
            run.run(["mount", *how, path])
            mounted.append(path)
        yield
    finally:
        for path in reversed(mounted):
            run.run(["umount", "--lazy", path], check=False)


def in_chroot(target: str, argv: Sequence[str], timeout: float = 900) -> run.Result:
    return run.run(["chroot", target, *argv], timeout=timeout,
                   env={"DEBIAN_FRONTEND": "noninteractive"})


def write_boot_code(device: str, code: bytes) -> None:
    """Write MBR boot code (first 440 bytes) only: the disk signature and table stay."""
    if len(code) != MBR_BOOT_CODE:
        raise BootloaderError(f"boot code for {device} is {len(code)} bytes, not {MBR_BOOT_CODE}")
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, code, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
