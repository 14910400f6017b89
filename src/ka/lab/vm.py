"""Virtual machines on the lab switch: QEMU nodes that PXE-boot, install, and boot their disk.

Each machine's NIC is a tap device plugged into the lab bridge, inside the switch namespace,
so a machine is one more host on the private switch (no uplink) and QEMU itself runs in that
namespace. Its serial console goes to a file that the lab reads: that file is the only thing
a test believes about what a machine did.

KVM is used when it works here. A /dev/kvm that exists is not enough (a nested guest without
virtualisation extensions may expose one whose guests hang), so a short boot of the kernel
under KVM decides, and TCG (software emulation) is the fallback.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ka import run
from ka.errors import KaError
from ka.lab.network import LabNetwork, TokenBucket

QEMU = "qemu-system-x86_64"
MAC_PREFIX = "52:54:00:4b:41"  # locally administered (QEMU's OUI) + "KA"
PROBE_SECONDS = 20.0
OVMF = (("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"))
# Where Debian's ipxe-qemu keeps the option ROM that gives virtio-net its PXE stack.
VIRTIO_ROMS = ("/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/share/qemu/efi-virtio.rom",
               "/usr/lib/ipxe/qemu/pxe-virtio.rom", "/usr/share/qemu/pxe-virtio.rom")


class VmError(KaError):
    """A lab virtual machine could not be started or did not do what it should."""


def node_mac(index: int) -> str:
    if not 1 <= index <= 255:
        raise ValueError(f"machine index {index} out of 1..255")
    return f"{MAC_PREFIX}:{index:02x}"


def virtio_rom() -> str:
    for path in VIRTIO_ROMS:
        if os.path.exists(path):
            return path
    raise VmError("QEMU's PXE boot ROM for virtio-net was not found",
                  hint="install the Debian package 'ipxe-qemu'")


@dataclass(frozen=True)
class Machine:
    """One lab virtual machine: its firmware, disk, NIC and console.

    The NIC boots first and the disk second (`bootindex`, which SeaBIOS and OVMF both honour):
    a machine boots from the network until `ka pxe` hands it over to its disk ("local").
    """

    name: str
    index: int
    disk: Path
    console: Path
    memory_mib: int = 1024
    firmware: str = "bios"  # "bios" (SeaBIOS) or "uefi" (OVMF)

    @property
    def mac(self) -> str:
        return node_mac(self.index)

    @property
    def tap(self) -> str:
        return f"tap{self.index}"

    @property
    def uefi_vars(self) -> Path:
        """This machine's own copy of the UEFI variable store."""
        return self.disk.with_suffix(".vars")

    def argv(self, accel: str) -> list[str]:
        cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
        firmware: list[str] = []
        if self.firmware == "uefi":
            code, _vars = ovmf_files()
            firmware = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                        "-drive", f"if=pflash,format=raw,unit=1,file={self.uefi_vars}"]
        return [
            QEMU, "-name", self.name, "-machine", f"pc,accel={accel},graphics=off", *cpu,
            "-m", str(self.memory_mib), "-smp", "1", *firmware,
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-chardev", f"file,id=console,path={self.console}",
            "-serial", "chardev:console",
            "-drive", f"file={self.disk},format=raw,if=none,id=disk0,cache=unsafe",
            "-device", "virtio-blk-pci,drive=disk0,bootindex=2",
            "-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no",
            # QEMU finds the NIC's PXE ROM (efi-virtio.rom) itself; an absolute romfile= path
            # to the same file gives a NIC without one.
            "-device", f"virtio-net-pci,netdev=net0,mac={self.mac},bootindex=1",
            "-boot", "reboot-timeout=1000",
        ]


def ovmf_files() -> tuple[str, str]:
    """OVMF's code and its pristine variable store (Debian package ovmf)."""
    for code, store in OVMF:
        if os.path.exists(code) and os.path.exists(store):
            return code, store
    raise VmError("the UEFI firmware for QEMU (OVMF) was not found",
                  hint="install the Debian package 'ovmf'")


def console_lines(path: Path) -> list[str]:
    """What a machine printed on its serial console, as lines without terminal escapes."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    text = raw.decode(errors="replace").replace("\r", "")
    return [_ESCAPES.sub("", line) for line in text.split("\n")]


_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[=>c])")


def kvm_works(kernel: str, workdir: Path) -> bool:
    """True when a guest boots under KVM here: its kernel reaches its panic within the probe."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    if not re.search(r"\b(vmx|svm)\b", cpuinfo):
        # A /dev/kvm without the extensions: guests hang in early boot on such machines.
        return False
    log = workdir / "kvm-probe.log"
    argv = [QEMU, "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=console,path={log}", "-serial", "chardev:console",
            "-kernel", kernel,
            "-append", "console=ttyS0 panic=-1 rdinit=/ka-no-init root=/dev/null"]
    try:
        run.run(argv, check=False, timeout=PROBE_SECONDS)
    except KaError:
        return False
    return any("Kernel panic" in line for line in console_lines(log))


@dataclass
class RunningMachine:
    machine: Machine
    popen: subprocess.Popen[bytes]
    qemu_log: Path  # what QEMU itself said (beside the machine's console)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def poll(self) -> int | None:
        status = self.popen.poll()
        if status is not None and self.ended is None:
            self.ended = time.monotonic()
        return status

    def stop(self) -> None:
        """End this QEMU (and only it: its own process group, started by us)."""
        run.signal_group(self.popen)
        run.reap_group(self.popen)
        self.poll()

    def lines(self) -> list[str]:
        return console_lines(self.machine.console)


def add_tap(lab: LabNetwork, tap: str) -> None:
    """A tap device on the lab bridge, in the switch namespace, shaped like every port."""
    sw = lab.switch_netns
    node = f"lab {lab.name}"
    run.run(["ip", "-n", sw, "tuntap", "add", "dev", tap, "mode", "tap"], node=node)
    run.run(["ip", "-n", sw, "link", "set", tap, "master", lab.bridge], node=node)
    run.run(["ip", "-n", sw, "link", "set", tap, "up"], node=node)
    if lab.rate_bits is not None:
        bucket = TokenBucket.for_rate(lab.rate_bits)
        run.run(["tc", "-n", sw, "qdisc", "replace", "dev", tap, "root", *bucket.tc_args()],
                node=node)


@contextlib.contextmanager
def machines_running(lab: LabNetwork, machines: Sequence[Machine], accel: str,
                     ) -> Iterator[list[RunningMachine]]:
    """Start every machine on the lab switch; stop them all on the way out, whatever happens.

    The taps live in the switch namespace and go with it when the lab is torn down.
    """
    virtio_rom()  # a clear error naming the package, before QEMU's own
    run.require(QEMU)
    running: list[RunningMachine] = []
    try:
        for m in machines:
            add_tap(lab, m.tap)
            m.console.write_bytes(b"")
            if m.firmware == "uefi":
                shutil.copyfile(ovmf_files()[1], m.uefi_vars)
            err = m.console.with_suffix(".qemu.log")
            with open(err, "wb") as out:
                popen = run.spawn(["ip", "netns", "exec", lab.switch_netns,
                                   *m.argv(accel)],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            running.append(RunningMachine(m, popen, err))
        yield running
    finally:
        for r in running:
            r.stop()
