"""Where each boot loader's files come from: Debian packages installed on the golden node.

Nothing here is home-made: pxelinux and its modules come from `pxelinux`/`syslinux-common`,
iPXE from `ipxe`, and the GRUB EFI network image is made by `grub-mkimage` from the modules of
`grub-efi-amd64-bin`. A missing file is a `BootLoaderMissing` that names the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ka.errors import KaError

BiosLoader = Literal["pxelinux", "ipxe", "none"]
UefiLoader = Literal["grub", "ipxe", "none"]
BIOS_LOADERS: tuple[BiosLoader, ...] = ("pxelinux", "ipxe", "none")
UEFI_LOADERS: tuple[UefiLoader, ...] = ("grub", "ipxe", "none")

PXELINUX_DIR = "/usr/lib/PXELINUX"
SYSLINUX_BIOS_DIR = "/usr/lib/syslinux/modules/bios"
IPXE_DIR = "/usr/lib/ipxe"
GRUB_EFI_DIR = "/usr/lib/grub/x86_64-efi"

# What DHCP names as the boot file, per loader (paths relative to the TFTP root).
BIOS_BOOT_FILE = {"pxelinux": "pxelinux.0", "ipxe": "ipxe/undionly.kpxe"}
UEFI_BOOT_FILE = {"grub": "grub/grubx64.efi", "ipxe": "ipxe/snponly.efi"}
IPXE_SCRIPT = "ipxe/boot.ipxe"

# Modules built into the GRUB network image: network boot, the menu, Linux boot, and what the
# "local" entry needs to find and chain the disk's own loader.
GRUB_MODULES = (
    "normal", "configfile", "echo", "test", "sleep", "regexp",
    "efinet", "net", "tftp", "linux", "gzio", "all_video", "efi_gop",
    "chain", "search", "search_fs_file", "part_gpt", "part_msdos", "fat", "ext2",
)
GRUB_PREFIX = "(tftp)/grub"


class BootLoaderMissing(KaError):
    """A boot loader file is not installed on this machine."""

    def __init__(self, path: str, package: str) -> None:
        super().__init__(
            f"boot loader file {path} is missing",
            hint=f"install the Debian package '{package}' (apt-get install {package})",
        )
        self.path = path
        self.package = package


@dataclass(frozen=True)
class PackagedFile:
    """A file copied as is from an installed Debian package into the TFTP tree."""

    source: str
    target: str  # relative to the TFTP root
    package: str


@dataclass(frozen=True)
class BuiltFile:
    """A file made by running a tool; `{output}` in argv is replaced by the target's path."""

    argv: tuple[str, ...]
    target: str
    package: str
    inputs: tuple[str, ...]  # must exist before running, else BootLoaderMissing(package)


def bios_files(loader: BiosLoader) -> tuple[PackagedFile, ...]:
    if loader == "pxelinux":
        modules = ("ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32")
        return (PackagedFile(f"{PXELINUX_DIR}/pxelinux.0", "pxelinux.0", "pxelinux"),) + tuple(
            PackagedFile(f"{SYSLINUX_BIOS_DIR}/{m}", m, "syslinux-common") for m in modules
        )
    if loader == "ipxe":
        return (PackagedFile(f"{IPXE_DIR}/undionly.kpxe", "ipxe/undionly.kpxe", "ipxe"),)
    return ()


def uefi_files(loader: UefiLoader) -> tuple[PackagedFile | BuiltFile, ...]:
    if loader == "grub":
        argv = ("grub-mkimage", "--format=x86_64-efi", f"--directory={GRUB_EFI_DIR}",
                f"--prefix={GRUB_PREFIX}", "--output={output}", *GRUB_MODULES)
        inputs = tuple(f"{GRUB_EFI_DIR}/{m}.mod" for m in GRUB_MODULES)
        return (BuiltFile(argv, UEFI_BOOT_FILE["grub"], "grub-efi-amd64-bin", inputs),)
    if loader == "ipxe":
        return (PackagedFile(f"{IPXE_DIR}/snponly.efi", "ipxe/snponly.efi", "ipxe"),)
    return ()


def check_installed(files: tuple[PackagedFile | BuiltFile, ...]) -> None:
    """Raise `BootLoaderMissing` for the first file (or build input) that is not installed."""
    for f in files:
        paths = (f.source,) if isinstance(f, PackagedFile) else f.inputs
        for path in paths:
            if not os.path.isfile(path):
                raise BootLoaderMissing(path, f.package)
