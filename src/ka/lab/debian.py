"""A small bootable Debian for the virtual machines of the lab: the golden system.

`debootstrap` builds it from Debian's packages (a kernel, GRUB for BIOS, systemd, udev) once;
the result is kept as a tar archive in a cache directory, keyed by what went into it, so later
runs only unpack it. The lab's own touches:

* the kernel and GRUB talk on the serial console (QEMU's ttyS0 is what the lab reads);
* a `ka-lab-marker` service prints, once the system is up, one line with the host name, the
  machine-id, the root filesystem's UUID and the firmware it booted by (bios or uefi), and
  powers the machine off: that line is how the
  lab knows which system booted, and the power-off is how it knows the machine is done;
* driver modules for hardware a lab machine does not have are left out (the kernel package
  alone is 400 MiB, mostly such drivers), which keeps every clone small;
* its initramfs holds the drivers of QEMU's virtio machines only (`MODULES=list`): every
  clone regenerates it, and initramfs-tools' default (`most`) runs some 7,400 programs to do
  so, which takes minutes under software emulation; `list` runs under 900.

The archive holds no machine-id and no fstab: each golden disk made from it gets its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ka import run
from ka.clone.bootloader import chroot_mounts
from ka.clone.tarstream import metadata_options
from ka.errors import KaError

RECIPE_VERSION = 3  # bump when the customisation below changes: the cache key follows it
DEFAULT_CACHE = Path("/var/cache/ka/lab")
# GRUB for BIOS (grub-pc) and the modules to install it for UEFI too (grub-efi-amd64-bin):
# a clone on a disk with both a BIOS boot partition and an ESP boots on either firmware.
PACKAGES = ("linux-image-amd64", "grub-pc", "grub-efi-amd64-bin", "systemd-sysv", "udev", "kmod",
            "initramfs-tools", "zstd")
MARKER = "KA-LAB-BOOTED"
MARKER_SCRIPT = "/usr/local/sbin/ka-lab-marker"
MARKER_UNIT = "ka-lab-marker.service"
# Module directories (under /lib/modules/VERSION/kernel) a QEMU machine with virtio disks and
# NICs never needs. Everything else stays, so the system still boots on other hardware.
PRUNED_MODULES = (
    "drivers/gpu", "drivers/media", "drivers/net/wireless", "drivers/net/ethernet",
    "drivers/net/usb", "drivers/net/can", "drivers/net/wwan", "drivers/infiniband",
    "drivers/iio", "drivers/usb", "drivers/staging", "drivers/comedi", "drivers/isdn",
    "drivers/mtd", "drivers/hwmon", "drivers/hid", "drivers/target", "drivers/bluetooth",
    "drivers/scsi/megaraid", "drivers/scsi/qla2xxx", "drivers/scsi/lpfc", "drivers/scsi/mpt3sas",
    "drivers/video", "drivers/mmc", "drivers/watchdog", "drivers/iio", "drivers/thunderbolt",
    "sound", "net/wireless", "net/mac80211", "net/bluetooth",
)
# Left out of the image: documentation and translations, and apt's downloads and lists.
PRUNED_TREES = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "var/cache/apt/archives", "var/lib/apt/lists")

MARKER_SCRIPT_TEXT = f"""\
#!/bin/sh
# ka lab: say on the serial console which system this is, then power off.
root=$(findmnt -n -o SOURCE /)
uuid=$(blkid -s UUID -o value "$root")
firmware=bios
[ -d /sys/firmware/efi ] && firmware=uefi
echo "{MARKER} hostname=$(hostname) machine-id=$(cat /etc/machine-id) root-uuid=$uuid" \\
    "firmware=$firmware" > /dev/ttyS0
systemctl --no-block poweroff
"""

MARKER_UNIT_TEXT = f"""\
[Unit]
Description=ka lab: report this system on the serial console, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart={MARKER_SCRIPT}

[Install]
WantedBy=multi-user.target
"""

INITRAMFS_CONF = "MODULES=list\n"
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "crc32c_generic",
                     "ext4")

GRUB_DEFAULTS = """\
# ka lab: everything on the serial console, and no waiting at the menu.
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
"""


class DebianError(KaError):
    """The golden Debian system could not be built."""


@dataclass(frozen=True)
class DebianRecipe:
    suite: str
    mirror: str
    packages: tuple[str, ...] = PACKAGES

    @property
    def key(self) -> str:
        text = repr((RECIPE_VERSION, self.suite, self.mirror, self.packages))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def archive(self, cache: Path) -> Path:
        return cache / f"golden-debian-{self.suite}-{self.key}.tar"


def host_suite(os_release: str = "/etc/os-release") -> str:
    """This machine's Debian release (the one whose debootstrap scripts are installed)."""
    try:
        for line in Path(os_release).read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                value = line.partition("=")[2].strip().strip('"')
                if value:
                    return value
    except OSError:
        pass
    return "bookworm"


def host_mirror(sources: str = "/etc/apt/sources.list.d/debian.sources",
                fallback: str = "http://deb.debian.org/debian") -> str:
    """The Debian mirror this machine's apt uses (the main archive, not the security one)."""
    try:
        text = Path(sources).read_text()
    except OSError:
        return fallback
    for stanza in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.splitlines()
                      if ":" in line and not line.startswith("#"))
        uris = fields.get("URIs", "").split()
        if uris and "security" not in uris[0]:
            return uris[0].rstrip("/")
    return fallback


def debootstrap_argv(recipe: DebianRecipe, root: Path) -> list[str]:
    return ["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
            recipe.suite, str(root), recipe.mirror]


def golden_archive(recipe: DebianRecipe, cache: Path = DEFAULT_CACHE,
                   step: Callable[[str], None] = lambda _m: None) -> Path:
    """The cached archive of the golden system; built (a few minutes) when missing."""
    archive = recipe.archive(cache)
    if archive.exists():
        step(f"golden Debian {recipe.suite}: cached in {archive}")
        return archive
    run.require("debootstrap")
    cache.mkdir(parents=True, exist_ok=True)
    build = cache / f"build-{os.getpid()}"
    root = build / "root"
    partial = archive.with_suffix(f".{os.getpid()}.partial")  # runs may build at once
    try:
        step(f"golden Debian {recipe.suite}: debootstrap from {recipe.mirror} (once; cached)")
        _debootstrap(recipe, root)
        customise(root)
        run.run(["tar", "--create", "--file", str(partial), *metadata_options(selinux=False),
                 "--one-file-system", "--sparse", "-C", str(root), "."])
        partial.rename(archive)
    finally:
        _remove_build(build)
        partial.unlink(missing_ok=True)
    step(f"golden Debian {recipe.suite}: archived in {archive}")
    return archive


def _debootstrap(recipe: DebianRecipe, root: Path, attempts: int = 2) -> None:
    """debootstrap into an empty `root`; a second try after a failure (a mirror's hiccup)."""
    for attempt in range(1, attempts + 1):
        _remove_build(root)
        root.mkdir(parents=True)
        try:
            run.run(debootstrap_argv(recipe, root), timeout=1800,
                    hint="debootstrap needs the Debian mirror that apt uses (--mirror to "
                         "choose another)")
            return
        except KaError:
            if attempt == attempts:
                raise
            time.sleep(10)


def customise(root: Path) -> None:
    """The lab's touches on a fresh debootstrap (see the module's docstring)."""
    _write(root / "etc/default/grub.d/ka-lab.cfg", GRUB_DEFAULTS)
    _write(root / "etc/initramfs-tools/conf.d/ka-lab", INITRAMFS_CONF)
    with open(root / "etc/initramfs-tools/modules", "a") as modules:
        modules.write("# ka lab: QEMU's virtio disks and the root filesystem\n")
        modules.writelines(f"{m}\n" for m in INITRAMFS_MODULES)
    _write(root / MARKER_SCRIPT.lstrip("/"), MARKER_SCRIPT_TEXT, 0o755)
    _write(root / "etc/systemd/system" / MARKER_UNIT, MARKER_UNIT_TEXT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / MARKER_UNIT).unlink(missing_ok=True)
    (wants / MARKER_UNIT).symlink_to(f"/etc/systemd/system/{MARKER_UNIT}")
    _write(root / "etc/hostname", "golden\n")
    _write(root / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tgolden\n")
    _write(root / "etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for tree in PRUNED_TREES:
        path = root / tree
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    versions = sorted(p.name for p in (root / "lib/modules").iterdir() if p.is_dir())
    if not versions:
        raise DebianError(f"no kernel modules in {root}/lib/modules after debootstrap",
                          hint="is linux-image-amd64 in the package list?")
    with chroot_mounts(str(root)):
        for version in versions:
            base = root / "lib/modules" / version / "kernel"
            for rel in PRUNED_MODULES:
                shutil.rmtree(base / rel, ignore_errors=True)
            run.run(["chroot", str(root), "depmod", "-a", version])
        run.run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], timeout=900)
    for stale in (root / "boot").glob("initrd.img-*.dpkg-bak"):
        stale.unlink()


def kernel_of(root: Path) -> tuple[Path, Path]:
    """(vmlinuz, modules directory) of the newest kernel installed in `root`."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    for kernel in reversed(kernels):
        modules = root / "lib/modules" / kernel.name[len("vmlinuz-"):]
        if modules.is_dir():
            return kernel, modules
    raise DebianError(f"no kernel with its modules in {root}/boot")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True)


def _remove_build(path: Path) -> None:
    """Remove a build tree, after unmounting what a failed debootstrap or chroot left in it.

    Never removes through a mount that is still there: with /dev or /sys bound inside, a
    recursive removal would walk into the machine's own.
    """
    for mount in _mounts_below(path):
        run.run(["umount", mount], check=False)
    left = _mounts_below(path)
    if left:
        raise DebianError(f"{left[0]} is still mounted; {path} is left in place",
                          hint=f"unmount it, then remove {path}")
    shutil.rmtree(path, ignore_errors=True)
