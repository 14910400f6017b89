"""Kernel driver modules for the boot environment: which ones, with their dependencies, in order.

The boot environment has no udev: /init loads a fixed list (network cards, disk controllers,
the filesystems ka creates) with busybox `insmod`, dependencies first, and a module for absent
hardware simply loads and idles. Modules compressed by the distribution are stored
decompressed, because busybox insmod may not read every compression.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import zstandard

# Names as in modules.dep (with - and _ alike). Missing ones are skipped: a kernel may have a
# driver built in, or not have it at all.
# What stage1 loads to reach the golden node: the network cards (virtio_pci carries
# virtio_net). Everything else in WANTED comes with stage2.
NETWORK = (
    "af_packet", "virtio_pci", "virtio_net", "e1000", "e1000e", "igb", "igc", "ixgbe", "i40e",
    "r8169", "tg3", "bnx2", "bnxt_en", "vmxnet3", "hv_netvsc",
)
WANTED = (
    *NETWORK,
    # disks
    "virtio_blk", "virtio_scsi", "sd_mod", "sr_mod", "ahci", "ata_piix", "nvme",
    "mptsas", "megaraid_sas", "hpsa", "vmw_pvscsi", "hv_storvsc", "usb_storage", "xhci_pci",
    "ehci_pci",
    # filesystems and what the disk layer uses. The crc32c implementations come first:
    # libcrc32c (btrfs, xfs) asks the crypto API for crc32c when it loads, and with no udev
    # and no modprobe nobody loads one on demand ("btrfs: Unknown symbol crc32c").
    "crc32c_intel", "crc32c_generic",
    # vfat needs its default code page and I/O charset: Debian's kernel mounts with
    # iocharset=ascii ("FAT-fs: IO charset ascii not found" fails every ESP mount).
    "ext4", "xfs", "btrfs", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8",
    "loop",
)

_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def fat_charset_modules(config: str) -> tuple[str, ...]:
    """The nls modules a vfat mount needs by default, from the kernel's .config text.

    A FAT mount without options asks for CONFIG_FAT_DEFAULT_CODEPAGE and
    CONFIG_FAT_DEFAULT_IOCHARSET; with no modprobe to load them on demand, a kernel built with
    other defaults than WANTED names would fail every ESP mount.
    """
    out = []
    codepage = re.search(r"^CONFIG_FAT_DEFAULT_CODEPAGE=(\d+)$", config, re.M)
    if codepage:
        out.append(f"nls_cp{codepage.group(1)}")
    charset = re.search(r'^CONFIG_FAT_DEFAULT_IOCHARSET="([^"]+)"$', config, re.M)
    if charset:
        out.append("nls_" + charset.group(1).lower().replace("-", "_"))
    return tuple(out)


def module_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """modules.dep: name -> (relative path, dependency paths)."""
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        table[module_name(path)] = (path.strip(), tuple(deps.split()))
    return table


@dataclass(frozen=True)
class ModuleSelection:
    paths: tuple[str, ...]  # relative to the modules directory, load order (dependencies first)
    missing: tuple[str, ...]  # wanted names that are neither modules nor built in


def select_modules(dep: Mapping[str, tuple[str, tuple[str, ...]]], builtin: Iterable[str],
                   wanted: Iterable[str] = WANTED) -> ModuleSelection:
    by_path = {p: name for name, (p, _) in dep.items()}
    built_in = {module_name(b) for b in builtin}
    order: list[str] = []
    seen: set[str] = set()
    missing: list[str] = []

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        name = by_path.get(path)
        if name is not None:
            for d in dep[name][1]:
                visit(d)
        order.append(path)

    for want in wanted:
        name = want.replace("-", "_")
        if name in dep:
            visit(dep[name][0])
        elif name not in built_in:
            missing.append(name)
    return ModuleSelection(tuple(order), tuple(missing))


def stored_name(path: str) -> str:
    """Where a module is kept in the initramfs: the same path, without compression suffix."""
    for suffix in (".xz", ".zst", ".gz"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def read_module(path: str) -> bytes:
    """A module file's ELF content, decompressed if needed."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    return data
