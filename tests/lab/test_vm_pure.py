"""The virtual machine lab's pure parts: QEMU command lines, consoles, verdicts, the Debian
recipe. No QEMU, no root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ka.boot.cmdline import BootOptions
from ka.boot.nodes import NodeEntry
from ka.boot.pxe import PxeConfig, menu_files
from ka.boot.state import save_state, write_text
from ka.boot.switch import set_boot
from ka.disk.desc import parse_desc
from ka.disk.plan import plan_layout
from ka.errors import UsageError
from ka.lab.debian import (
    MARKER,
    DebianRecipe,
    debootstrap_argv,
    host_mirror,
    host_suite,
)
from ka.lab.vm import Machine, VmError, console_lines, node_mac, ovmf_files
from ka.lab.vmcheck import (
    STAGE2,
    GoldenIdentity,
    MachineOutcome,
    boot_entries,
    distinct_machine_ids,
    judge_machine,
    parse_marker,
    summary_node,
)
from ka.lab.vmclone import VmCloneOptions, firmware_of, lab_clone_vm, vm_desc
from needs import missing

MiB = 1024 * 1024
MAC1 = "52:54:00:4b:41:01"
GOLDEN = GoldenIdentity("golden", "0" * 32, "11111111-2222-3333-4444-555555555555")


def test_macs_are_local_and_distinct() -> None:
    assert node_mac(1) == "52:54:00:4b:41:01"
    assert node_mac(255) == "52:54:00:4b:41:ff"
    with pytest.raises(ValueError):
        node_mac(0)


def test_machine_argv(tmp_path: Path) -> None:
    m = Machine("vm2", 2, tmp_path / "vm2.img", tmp_path / "vm2.console", memory_mib=768)
    argv = m.argv("tcg")
    assert argv[0] == "qemu-system-x86_64"
    joined = " ".join(argv)
    assert "-machine pc,accel=tcg,graphics=off" in joined
    assert "-m 768" in joined
    assert f"file={tmp_path / 'vm2.img'},format=raw,if=none,id=disk0" in joined
    # The NIC boots first, the disk second: SeaBIOS and OVMF both follow bootindex.
    assert "virtio-blk-pci,drive=disk0,bootindex=2" in joined
    assert "tap,id=net0,ifname=tap2,script=no,downscript=no" in joined
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:4b:41:02,bootindex=1" in joined
    assert f"path={tmp_path / 'vm2.console'}" in joined
    assert "pflash" not in joined
    assert "-cpu host" in " ".join(m.argv("kvm"))


def test_uefi_machine_has_its_own_variable_store(tmp_path: Path) -> None:
    try:
        code, _store = ovmf_files()
    except VmError:
        missing("OVMF is not installed (Debian package ovmf; scripts/setup.sh installs it)")
    m = Machine("vm2", 2, tmp_path / "vm2.img", tmp_path / "vm2.console", firmware="uefi")
    joined = " ".join(m.argv("tcg"))
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in joined
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'vm2.vars'}" in joined


def test_firmware_of_machines() -> None:
    assert [firmware_of(i, "both") for i in (1, 2, 3)] == ["bios", "uefi", "bios"]
    assert firmware_of(2, "bios") == "bios" and firmware_of(1, "uefi") == "uefi"


def test_console_lines_drop_terminal_escapes(tmp_path: Path) -> None:
    path = tmp_path / "console"
    path.write_bytes(b"\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n\x1b[0;1miPXE\x1b[0m ok\r\nlast")
    assert console_lines(path) == ["SeaBIOS", "iPXE ok", "last"]
    assert console_lines(tmp_path / "missing") == []


def test_marker() -> None:
    lines = ["boot", f"{MARKER} hostname=node01 machine-id={'a' * 32} root-uuid=u-1 "
             "firmware=uefi", "off"]
    assert parse_marker(lines) == (1, {"hostname": "node01", "machine-id": "a" * 32,
                                       "root-uuid": "u-1", "firmware": "uefi"})
    assert parse_marker(["no marker"]) is None
    # A systemd status line written just before it, on the same line of the console.
    shared = [f"[  OK  ] Finished ssh.service.{MARKER} hostname=node02 machine-id=b root-uuid=v "
              "firmware=bios"]
    assert parse_marker(shared) == (0, {"hostname": "node02", "machine-id": "b",
                                        "root-uuid": "v", "firmware": "bios"})


def test_boot_entries_are_read_from_the_pxe_state(tmp_path: Path) -> None:
    # The state as `ka pxe config` leaves it, then one machine switched by `ka pxe set`.
    config = PxeConfig(interface="eth0", state_dir=str(tmp_path),
                       tftp_root=str(tmp_path / "tftp"), range=("10.9.0.100", "10.9.0.199"),
                       bios="pxelinux", uefi="grub", boot=BootOptions(host="10.9.0.1"),
                       nodes=(NodeEntry(MAC1, "10.9.0.101", "vm1"),))
    for f in menu_files(config, "ka", None):
        write_text(str(tmp_path / "tftp" / f.target), f.text)
    save_state(config)
    assert boot_entries(tmp_path) == ({}, "ka")
    set_boot(config, [MAC1], "local")
    assert boot_entries(tmp_path) == ({MAC1: "local"}, "ka")


def _summary(tmp_path: Path, **node: object) -> Path:
    (tmp_path / "summary.json").write_text(json.dumps({"nodes": [node]}))
    return tmp_path


def test_a_machine_that_must_fail(tmp_path: Path) -> None:
    reports = _summary(tmp_path, name="node03", mac="52:54:00:4b:41:03", result="failed",
                       reason="/dev/vda (256 MiB) is too small")
    lines = ["ka: install attempt 1 of 1",
             "ka: !!! could not install this node after 1 attempts !!!"]
    kw = dict(expect_failure=True, reports=reports, boot_entry="ka", mac="52:54:00:4b:41:03",
              seconds=1.0, workdir=tmp_path)
    ok = judge_machine("vm3", lines, tmp_path / "vm3.img", vm_desc(), GOLDEN, **kw)
    assert ok.ok and ok.gave_up and not ok.installed and ok.result == "failed, as it must"
    assert ok.boot_entry == "ka"
    assert ok.node is not None and ok.node["name"] == "node03"
    # Booting a clone, or being switched to local, is wrong for it.
    booted = judge_machine("vm3", [*lines, f"{MARKER} hostname=node03 machine-id=x root-uuid=y"],
                           tmp_path / "vm3.img", vm_desc(), GOLDEN,
                           **{**kw, "boot_entry": "local"})
    assert not booted.ok
    assert any("booted a clone" in p for p in booted.problems)
    assert any("'local'" in p for p in booted.problems)


def test_a_machine_to_clone_that_never_booted_its_clone(tmp_path: Path) -> None:
    reports = _summary(tmp_path, name="node01", mac="52:54:00:4b:41:01", result="ok")
    out = judge_machine("vm1", ["ka: install succeeded; rebooting", "GRUB loading."],
                        tmp_path / "vm1.img", vm_desc(), GOLDEN, expect_failure=False,
                        reports=reports, boot_entry="local", mac=MAC1, seconds=2.0,
                        workdir=tmp_path)
    assert out.installed and not out.ok and out.result == "FAILED"
    assert any("marker" in p for p in out.problems)
    assert any("never showed stage2" in p for p in out.problems), "booted without stage2"
    late = judge_machine("vm1", ["ka: install succeeded; rebooting", STAGE2], tmp_path / "vm1.img",
                         vm_desc(), GOLDEN, expect_failure=False, reports=reports,
                         boot_entry="local", mac=MAC1, seconds=2.0, workdir=tmp_path)
    assert any("stage2 came after the install" in p for p in late.problems)


def test_summary_node_by_mac(tmp_path: Path) -> None:
    reports = _summary(tmp_path, name="node02", mac="52:54:00:4B:41:02", result="ok")
    assert summary_node(reports, "52:54:00:4b:41:02") == {
        "name": "node02", "mac": "52:54:00:4B:41:02", "result": "ok"}
    assert summary_node(reports, "52:54:00:4b:41:09") is None
    assert summary_node(tmp_path / "nowhere", "52:54:00:4b:41:02") is None


def test_shared_machine_ids_are_found() -> None:
    def outcome(name: str, mid: str) -> MachineOutcome:
        return MachineOutcome(name, "", False, 0.0, {"machine-id": mid}, None, ())
    assert distinct_machine_ids([outcome("vm1", "a"), outcome("vm2", "b")]) == []
    assert distinct_machine_ids([outcome("vm1", "a"), outcome("vm2", "a")]) == [
        "vm2 and vm1 share the machine-id a"]


def test_vm_layout_on_a_gigabyte() -> None:
    plan = plan_layout(parse_desc(vm_desc()), 1024 * MiB)
    sizes = [(p.number, p.size * p.sector_size // MiB, p.fs, p.mountpoint)
             for p in plan.partitions]
    assert sizes[0] == (1, 1, None, None)          # BIOS boot partition for GRUB's core
    assert sizes[1] == (2, 64, "vfat", "/boot/efi")  # the ESP, for UEFI machines
    assert sizes[2][2:] == ("ext4", "/") and sizes[2][1] > 850
    assert sizes[3] == (4, 64, "swap", None)


def test_debian_recipe(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
                       "Types: deb\nURIs: http://mirror.example/debian-security\n")
    assert host_mirror(str(sources)) == "http://mirror.example/debian"
    assert host_mirror(str(tmp_path / "none")) == "http://deb.debian.org/debian"
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=trixie\n')
    assert host_suite(str(release)) == "trixie"
    assert host_suite(str(tmp_path / "none")) == "bookworm"
    recipe = DebianRecipe("bookworm", "http://mirror.example/debian")
    assert debootstrap_argv(recipe, tmp_path / "root") == [
        "debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
        "bookworm", str(tmp_path / "root"), "http://mirror.example/debian"]
    other = DebianRecipe("bookworm", "http://mirror.example/debian", ("linux-image-amd64",))
    assert recipe.key != other.key
    assert recipe.archive(tmp_path).name == f"golden-debian-bookworm-{recipe.key}.tar"


@pytest.mark.parametrize("options, words", [
    (VmCloneOptions(machines=0), "1 to 20 machines"),
    (VmCloneOptions(machines=21), "1 to 20 machines"),
    (VmCloneOptions(memory_mib=256), "too little"),
    (VmCloneOptions(firmware="coreboot"), "unknown firmware"),
    (VmCloneOptions(machines=2, small=(3,)), "small machine"),
])
def test_bad_options_are_refused_before_anything_is_built(options: VmCloneOptions,
                                                         words: str) -> None:
    with pytest.raises(UsageError, match=words):
        lab_clone_vm(options)
