"""`ka lab clone --vm N`: blank virtual machines network-boot, get cloned, and boot the clone.

The whole path of a real deployment, on one machine:

1. a golden disk holding a small bootable Debian (ka.lab.debian: kernel, GRUB, systemd), mounted
   on the golden host of a lab network (ka.lab.network) that has no other namespace;
2. `ka bootenv build` with the golden system's own kernel and the session key, `ka pxe config`
   with a node table (MAC, address, name of every machine), and `ka pxe serve` (dnsmasq) on the
   golden host;
3. `ka clone --pxe` on the golden host;
4. N QEMU machines (ka.lab.vm) with blank virtio disks whose NICs are taps on the lab switch:
   their firmware PXE-boots pxelinux, which boots the ka boot environment, whose /init runs
   `ka install` against the golden node and reboots; `ka clone --pxe` has meanwhile switched
   every installed machine to "local", so the next PXE boot hands over to the disk: GRUB, the
   clone's kernel, systemd, and the golden system's marker service, which prints the host
   name, machine-id and root UUID on the serial console and powers the machine off.

What a machine printed on its serial console is what the lab judges (ka.lab.vmcheck).
A machine whose disk is too small (`small`) must fail its install, say why in its report, and
stay on "ka" boot.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ka import run
from ka.clone.bootloader import chroot_mounts
from ka.clone.tarstream import metadata_options
from ka.disk.devices import blkid_probe
from ka.errors import KaError, UsageError
from ka.keys import new_key, write_identity, write_key_file
from ka.lab.clone import LabProcesses, tail
from ka.lab.debian import DEFAULT_CACHE, DebianRecipe, golden_archive, host_mirror, host_suite
from ka.lab.debian import kernel_of as golden_kernel
from ka.lab.disks import (
    Image,
    attached_image,
    expected_partitions,
    format_golden,
    fstab_entries,
    mounted_tree,
)
from ka.lab.golden import write_fstab
from ka.lab.network import LabNetwork, unique_name
from ka.lab.vm import Machine, RunningMachine, kvm_works, machines_running
from ka.lab.vmcheck import (
    GIVE_UP,
    GoldenIdentity,
    MachineOutcome,
    boot_entries,
    distinct_machine_ids,
    judge_machine,
    summary_lines,
)

MiB = 1024 * 1024
HOSTNAMES = "node{n:02d}"
MIN_MEMORY_MIB = 512
AFTER_GOLDEN = 600.0  # seconds machines may still run once `ka clone` has ended
BOOT_DEADLINE = 600.0  # seconds for some machine to reach the boot environment's install
BOOTED_ENV = "ka: install attempt"


def vm_desc() -> str:
    """GPT for both firmwares: a BIOS boot partition for GRUB's core and an ESP (which each node
    formats and fills by grub-install: this kernel cannot mount vfat to fill the golden's),
    the root filesystem and a little swap."""
    return ("label gpt\n"
            "bios 1MiB\n"
            "esp 64MiB fs=vfat mount=/boot/efi label=ESP\n"
            "linux fill fs=ext4 mount=/ label=root\n"
            "swap 64MiB label=swap\n")


def firmware_of(index: int, firmware: str) -> str:
    """"bios", "uefi", or for "both" BIOS on odd machines and UEFI on even ones."""
    if firmware == "both":
        return "bios" if index % 2 else "uefi"
    return firmware


@dataclass(frozen=True)
class VmCloneOptions:
    machines: int = 2
    size: int = 1024 * MiB           # golden disk and every node disk, unless small
    small: tuple[int, ...] = ()      # machines given a disk too small for the golden layout
    firmware: str = "both"           # bios, uefi, or both (odd machines BIOS, even ones UEFI)
    memory_mib: int = 1024
    rate: str | None = "1gbit"
    accel: str = "auto"              # auto (KVM when it works here), kvm or tcg
    cache: Path = DEFAULT_CACHE      # where the golden Debian archive is kept
    mirror: str | None = None        # Debian mirror for debootstrap (default: apt's)
    suite: str | None = None
    timeout: float = 1800.0          # from the first machine's start to the last one's end
    keep: bool = False
    workdir: Path | None = None


@dataclass(frozen=True)
class VmCloneReport:
    machines: tuple[MachineOutcome, ...]
    golden_status: int | None
    golden_log_tail: str
    accel: str
    seconds: float
    workdir: str | None
    identity_problems: tuple[str, ...] = ()   # clones sharing a machine-id

    @property
    def ok(self) -> bool:
        return (self.golden_status_ok and all(m.ok for m in self.machines)
                and not self.identity_problems)

    @property
    def golden_status_ok(self) -> bool:
        # With a machine that must fail, `ka clone` must say so (non-zero); None is a
        # `ka clone` that never ended, which is never right.
        if self.golden_status is None:
            return False
        expect_failure = any(m.expect_failure for m in self.machines)
        return (self.golden_status != 0) if expect_failure else self.golden_status == 0


Step = Callable[[str], None]


def lab_clone_vm(options: VmCloneOptions, on_step: Step | None = None) -> VmCloneReport:
    if not 1 <= options.machines <= 20:
        raise UsageError(f"--vm takes 1 to 20 machines, not {options.machines}")
    if options.memory_mib < MIN_MEMORY_MIB:
        raise UsageError(f"--memory {options.memory_mib} MiB is too little for the boot "
                         "environment (its initramfs holds Python and the disk tools)",
                         hint=f"give at least {MIN_MEMORY_MIB} MiB")
    if options.firmware not in ("bios", "uefi", "both"):
        raise UsageError(f"unknown firmware {options.firmware!r}: use bios, uefi or both")
    if any(not 1 <= i <= options.machines for i in options.small):
        raise UsageError("a small machine's number must be one of the machines")
    if os.geteuid() != 0:
        raise KaError("the lab needs root (namespaces, loop devices, mounts, taps)",
                      hint="run it as root, e.g. with sudo")
    for tool in ("qemu-system-x86_64", "debootstrap", "dnsmasq", "busybox"):
        run.require(tool)
    step = on_step or (lambda _m: None)
    started = time.monotonic()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ka-lab-vm-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # dnsmasq reads the TFTP tree after dropping root
    try:
        with contextlib.ExitStack() as stack:
            return _run(options, workdir, stack, step, started)
    finally:
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(options: VmCloneOptions, workdir: Path, stack: contextlib.ExitStack, step: Step,
         started: float) -> VmCloneReport:
    recipe = DebianRecipe(options.suite or host_suite(), options.mirror or host_mirror())
    archive = golden_archive(recipe, options.cache, step)
    desc = vm_desc()
    (workdir / "golden.desc").write_text(desc)
    golden = stack.enter_context(attached_image(workdir / "golden.img", options.size))
    identity = _golden_disk(golden, desc, archive, workdir, stack)
    kernel, modules = golden_kernel(workdir / "golden")
    step(f"golden disk: {options.size // MiB} MiB, Debian {recipe.suite} with "
         f"{kernel.name}, machine-id {identity.machine_id}")

    key = workdir / "session.key"
    write_key_file(str(key), new_key(), force=True)
    _key, golden_pub = write_identity(str(workdir / "identity"), force=True)
    accel = _accel(options.accel, str(kernel), workdir)
    step(f"machines run under {accel.upper()}")

    lab = stack.enter_context(LabNetwork(0, rate=options.rate, name=unique_name(),
                                         machines_only=True))
    net = lab.hosts[0].address.rsplit(".", 1)[0]
    machines = [Machine(f"vm{i}", i, workdir / f"vm{i}.img", workdir / f"vm{i}.console",
                        memory_mib=options.memory_mib,
                        firmware=firmware_of(i, options.firmware))
                for i in range(1, options.machines + 1)]
    addresses = {m.name: f"{net}.{100 + m.index}" for m in machines}
    nodes_file = workdir / "nodes"
    nodes_file.write_text("".join(f"{m.mac} {addresses[m.name]} {m.name}\n" for m in machines))
    for m in machines:
        small = m.index in options.small
        with open(m.disk, "wb") as f:
            f.truncate(256 * MiB if small else options.size)

    ka = [sys.executable, "-m", "ka"]
    bootenv, state = workdir / "bootenv", workdir / "pxe"
    lab.run(0, [*ka, "bootenv", "build", "--output", str(bootenv), "--kernel", str(kernel),
                "--modules", str(modules), "--key-file", str(key), "--golden-key",
                str(golden_pub)], timeout=600)
    lab.run(0, [*ka, "pxe", "config", "--interface", "eth0", "--range",
                f"{net}.100,{net}.199", "--dir", str(state), "--bootenv", str(bootenv),
                "--nodes", str(nodes_file), "--console", "ttyS0,115200", "--retries", "1",
                "--bios", "pxelinux", "--uefi", "grub"])
    step(f"boot environment built; ka pxe serves {net}.0/24 from the golden host")
    procs = LabProcesses(stack)
    procs.start("dnsmasq", lab.argv(0, [*ka, "pxe", "serve", "--dir", str(state)]),
                workdir / "dnsmasq.log")
    drive = os.path.basename(golden.device)
    procs.start("golden", lab.argv(0, [
        *ka, "clone", "--nodes", str(options.machines), "--root", str(workdir / "golden"),
        "--desc", f"{drive}={workdir / 'golden.desc'}", "--hostnames", HOSTNAMES,
        "--key-file", str(key), "--identity", str(workdir / "identity"),
        "--logs", str(workdir / "logs"), "--join-timeout", "600",
        # Emulated machines sharing two cores can be starved for seconds at a time.
        "--stall-timeout", "30",
        "--session-prefix", "ka", "--pxe", str(state)]), workdir / "golden.log")
    step(f"ka clone --pxe waits for {options.machines} machines; starting them")
    running = stack.enter_context(machines_running(lab, machines, accel))
    _watch(running, procs, options, step)
    for r in running:
        r.stop()  # before its disk is read back (only those still running after the timeout)
    golden_status = procs.wait_for("golden", 30.0)
    entries, default = boot_entries(state)
    outcomes = []
    for r in running:
        outcome = judge_machine(
            r.machine.name, r.lines(), r.machine.disk, desc, identity,
            expect_failure=r.machine.index in options.small, firmware=r.machine.firmware,
            reports=workdir / "logs" / "ka", mac=r.machine.mac,
            boot_entry=entries.get(r.machine.mac, default),
            seconds=(r.ended or time.monotonic()) - r.started, workdir=workdir / "check")
        outcomes.append(outcome)
    return VmCloneReport(
        machines=tuple(outcomes), golden_status=golden_status,
        golden_log_tail=tail(procs.log("golden"), 20), accel=accel,
        seconds=time.monotonic() - started, workdir=str(workdir) if options.keep else None,
        identity_problems=tuple(distinct_machine_ids(outcomes)))


def vm_summary(report: VmCloneReport) -> str:
    lines = summary_lines(report.machines)
    lines += list(report.identity_problems)
    lines.append(f"machines under {report.accel.upper()}; whole run {report.seconds:.0f} s; "
                 f"ka clone exit status {report.golden_status}"
                 + ("" if report.golden_status_ok else " (not what the machines called for)"))
    if not report.golden_status_ok:
        lines.append("golden node (ka clone) output, last lines:")
        lines += ["  " + line for line in report.golden_log_tail.splitlines()]
    for m in report.machines:
        if not m.ok:
            lines.append(f"{m.name}: serial console, last lines:")
            lines += ["  " + line for line in m.console_tail.splitlines()]
    if report.workdir:
        lines.append(f"work directory kept: {report.workdir}")
    lines.append("RESULT: " + ("every machine booted its own clone" if report.ok
                               else "FAILED"))
    return "\n".join(lines)


def _golden_disk(golden: Image, desc: str, archive: Path, workdir: Path,
                 stack: contextlib.ExitStack) -> GoldenIdentity:
    """Partition and format the golden disk, unpack the system, make it bootable by itself."""
    format_golden(golden, desc)
    expected = expected_partitions(desc, golden.size)
    root = stack.enter_context(mounted_tree(golden, expected, workdir / "golden",
                                            read_only=False))
    run.run(["tar", "--extract", "--file", str(archive), *metadata_options(selinux=False),
             "-C", str(root)])
    (root / "boot/efi").mkdir(parents=True, exist_ok=True)
    write_fstab(root, fstab_entries(golden, expected))
    machine_id = secrets.token_hex(16)
    (root / "etc/machine-id").write_text(machine_id + "\n")
    with chroot_mounts(str(root)):
        run.run(["chroot", str(root), "grub-install", "--target=i386-pc", golden.device],
                timeout=300)
        run.run(["chroot", str(root), "update-grub"], timeout=300)
    os.sync()
    root_part = next(p for p in expected if p.mountpoint == "/")
    uuid = blkid_probe(golden.partition(root_part.number)).get("UUID", "")
    return GoldenIdentity(hostname="golden", machine_id=machine_id, root_uuid=uuid)


def _accel(choice: str, kernel: str, workdir: Path) -> str:
    if choice == "tcg":
        return "tcg"
    works = kvm_works(kernel, workdir)
    if choice == "kvm" and not works:
        raise KaError("KVM does not work on this machine (no /dev/kvm, no virtualisation "
                      "extensions, or a probe guest did not boot)", hint="use --accel tcg")
    return "kvm" if works else "tcg"


def _watch(running: list[RunningMachine], procs: LabProcesses, options: VmCloneOptions,
           step: Step) -> None:
    """Until every machine is done: powered off after its marker, or (a machine that must
    fail) given up on its install. A machine that must fail is stopped once it gave up."""
    deadline = time.monotonic() + options.timeout
    said: set[str] = set()
    golden_done = False
    boot_deadline, boot_checked = time.monotonic() + BOOT_DEADLINE, False
    while time.monotonic() < deadline:
        if not golden_done and not procs.running("golden"):
            # Nothing more will be installed: the machines get the time of a reboot and a
            # boot of their clone, not the whole timeout.
            golden_done = True
            deadline = min(deadline, time.monotonic() + AFTER_GOLDEN)
            step(f"ka clone exited with status {procs.status('golden')}")
        pending = 0
        for r in running:
            status = r.poll()
            name = r.machine.name
            if status is not None:
                if name not in said:
                    said.add(name)
                    step(f"{name}: powered off (QEMU status {status})")
                continue
            if r.machine.index in options.small and any(GIVE_UP in x for x in r.lines()):
                step(f"{name}: gave up installing, as expected; stopping it")
                r.stop()
                continue
            pending += 1
        if not procs.running("dnsmasq"):
            raise KaError("ka pxe serve ended early:\n" + tail(procs.log("dnsmasq")))
        if not pending:
            return
        if not boot_checked and time.monotonic() > boot_deadline:
            boot_checked = True
            if not any(BOOTED_ENV in x for r in running for x in r.lines()):
                step(f"no machine started the boot environment within {BOOT_DEADLINE:.0f} s "
                     "(network boot broken?); stopping them")
                return
        time.sleep(1.0)
    step(f"timeout after {options.timeout:.0f} s; stopping the machines still running")
