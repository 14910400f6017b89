"""End to end on virtual machines: blank QEMU machines PXE-boot from `ka pxe serve`, run the
ka boot environment, are installed by `ka clone --pxe`, reboot from their own disk into the
golden Debian, and say on their serial console who they are.

Two machines are cloned, one booting by BIOS (SeaBIOS, pxelinux) and one by UEFI (OVMF, GRUB
EFI), and a third, whose disk is too small, must fail, say why, and stay on "ka" boot. Under
software emulation (no working KVM) the run takes several minutes. The golden Debian archive
is built by `ka lab debian` in scripts/setup.sh (debootstrap from the Debian mirror, cached in
/var/cache/ka/lab): this test reaches nothing outside its lab.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ka.lab.debian import DEFAULT_CACHE, DebianRecipe, host_mirror, host_suite
from ka.lab.vm import VmError, ovmf_files, virtio_rom
from ka.lab.vmclone import VmCloneOptions, lab_clone_vm, vm_summary
from needs import missing, need

# The run itself gives up after 1800 s (its own timeout, below); the test after that.
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(2400)]
MiB = 1024 * 1024


def _require() -> None:
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"),
                          ("debootstrap", "debootstrap"), ("dnsmasq", "dnsmasq-base"),
                          ("busybox", "busybox-static"),
                          ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")):
        need(tool, package)
    for firmware_file in (virtio_rom, ovmf_files):
        try:
            firmware_file()
        except VmError as e:
            missing(f"{e} ({e.hint})")
    # The golden Debian comes from the Debian mirror: setup fetches it, never this test.
    if not DebianRecipe(host_suite(), host_mirror()).archive(DEFAULT_CACHE).exists():
        missing("the golden Debian is not built: run `ka lab debian` (scripts/setup.sh does)")


def test_machines_pxe_boot_get_cloned_and_boot_their_clone(leaves_nothing_open: Path) -> None:
    _require()
    report = lab_clone_vm(VmCloneOptions(machines=3, small=(3,), firmware="both",
                                         workdir=leaves_nothing_open,
                                         timeout=1800.0))
    print(vm_summary(report))
    by_name = {m.name: m for m in report.machines}
    cloned = [by_name["vm1"], by_name["vm2"]]
    small = by_name["vm3"]

    # What the serial consoles printed: the install, then the clone's own marker.
    assert [m.firmware for m in cloned] == ["bios", "uefi"]
    names = set()
    for m in cloned:
        assert m.marker is not None and m.marker.get("firmware") == m.firmware, m.console_tail
        assert m.installed, m.console_tail
        assert m.marker is not None, f"{m.name} never printed its marker:\n{m.console_tail}"
        assert m.boot_entry == "local", "ka clone --pxe switched it to its disk"
        assert not m.problems, m.problems
        names.add(m.marker["hostname"])
        assert re.fullmatch(r"[0-9a-f]{32}", m.marker["machine-id"])
        assert m.disk["machine-id"] == m.marker["machine-id"]
        assert m.disk["fstab-root"] == f"UUID={m.marker['root-uuid']}"
    assert names == {"node01", "node02"}
    assert cloned[0].marker and cloned[1].marker
    assert cloned[0].marker["machine-id"] != cloned[1].marker["machine-id"]
    assert cloned[0].marker["root-uuid"] != cloned[1].marker["root-uuid"]
    assert not report.identity_problems

    # The machine with a disk too small: failed, said why, never booted a clone, left on ka.
    assert small.marker is None
    assert small.node is not None and small.node["result"] == "failed"
    assert "too small" in str(small.node["reason"])
    assert small.gave_up and not small.installed, small.console_tail
    assert small.boot_entry == "ka"
    assert not small.problems, small.problems

    assert report.golden_status not in (0, None)  # ka clone says a node failed
    assert report.ok, vm_summary(report)
