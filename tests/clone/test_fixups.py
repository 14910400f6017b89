"""Fix-ups inside a clone tree, on a temporary directory (no root needed)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from ka.clone import bootloader as boot
from ka.clone import fixups, golden
from ka.clone.plan import ClonePlan, ExcludedDir, GoldenPartition
from needs import need

OLD = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
NEW = "9f0c3a52-7d1e-4c2b-a4b7-5e8d2f6c1a90"
OLD_SWAP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
NEW_SWAP = "0e5f1c9a-3b7d-4e2f-8a6c-1d9b7e4f2a35"


def plan(fstab: str = "") -> ClonePlan:
    parts = (
        GoldenPartition("sda", 1, "ext4", "/", "root", OLD, "c0ffee00-0000-4000-8000-000000000001",
                        "/dev/sda1", content="tar"),
        GoldenPartition("sda", 2, "swap", None, None, OLD_SWAP, None, "/dev/sda2"),
        GoldenPartition("sda", 3, "ext4", "/srv", "srv", None, None, "/dev/sda3"),
    )
    return ClonePlan("ka", 1, (), parts, (), fstab, excluded_refs=("/dev/sdb1",))


NEW_IDS = [
    fixups.NewIdentity("sda", 1, NEW, "deadbeef-0000-4000-8000-000000000002", "root",
                       "/dev/vda1"),
    fixups.NewIdentity("sda", 2, NEW_SWAP, None, None, "/dev/vda2"),
    fixups.NewIdentity("sda", 3, "33333333-3333-4333-8333-333333333333", None, "srv",
                       "/dev/vda3"),
]


def test_identity_map_links_golden_and_node_ids() -> None:
    ids = fixups.identity_map(plan(), NEW_IDS)
    assert ids.uuids == {OLD: NEW, OLD_SWAP: NEW_SWAP}
    assert ids.partuuids == {"c0ffee00-0000-4000-8000-000000000001":
                             "deadbeef-0000-4000-8000-000000000002"}
    assert ids.devices == {"/dev/sda1": NEW, "/dev/sda2": NEW_SWAP,
                           "/dev/sda3": "33333333-3333-4333-8333-333333333333"}
    assert ids.labels == {} and ids.commented == {"/dev/sdb1"}


def test_write_fstab_and_id_files(tmp_path: Path) -> None:
    fstab = (f"UUID={OLD} / ext4 defaults 0 1\n/dev/sda2 none swap sw 0 0\n"
             "/dev/sda3 /srv ext4 defaults 0 2\n/dev/sdb1 /x ext4 defaults 0 2\n")
    p = plan(fstab)
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "etc/initramfs-tools/conf.d").mkdir(parents=True)
    (tmp_path / "etc/fstab").write_text("stale copy from the tar stream\n")
    (tmp_path / "boot/grub/grub.cfg").write_text(f"linux /vmlinuz root=UUID={OLD} ro\n")
    (tmp_path / "etc/default/grub").write_text(f'GRUB_CMDLINE_LINUX="resume=UUID={OLD_SWAP}"\n')
    (tmp_path / "etc/initramfs-tools/conf.d/resume").write_text(f"RESUME=UUID={OLD_SWAP}\n")
    (tmp_path / "etc/crypttab").write_text("# none\n")
    os.chmod(tmp_path / "boot/grub/grub.cfg", 0o600)
    ids = fixups.identity_map(p, NEW_IDS)
    result = fixups.write_fstab(str(tmp_path), p, ids)
    assert (tmp_path / "etc/fstab").read_text() == (
        f"UUID={NEW} / ext4 defaults 0 1\nUUID={NEW_SWAP} none swap sw 0 0\n"
        "UUID=33333333-3333-4333-8333-333333333333 /srv ext4 defaults 0 2\n"
        "# ka: disk left out of the clone: /dev/sdb1 /x ext4 defaults 0 2\n")
    assert len(result.changed) == 3
    changed = dict(fixups.rewrite_id_files(str(tmp_path), ids.id_pairs()))
    assert changed == {"/boot/grub/grub.cfg": 1, "/etc/default/grub": 1,
                       "/etc/initramfs-tools/conf.d/resume": 1, "/etc/crypttab": 0}
    assert (tmp_path / "boot/grub/grub.cfg").read_text() == f"linux /vmlinuz root=UUID={NEW} ro\n"
    assert os.stat(tmp_path / "boot/grub/grub.cfg").st_mode & 0o777 == 0o600
    assert NEW_SWAP in (tmp_path / "etc/initramfs-tools/conf.d/resume").read_text()


def test_fstab_entries_by_hardware_path_become_uuids(tmp_path: Path) -> None:
    # The golden's fstab names / by its disk's serial number and /srv by its bus path: links
    # that exist only on the golden machine. The nodes get UUID= entries instead.
    by_id = "/dev/disk/by-id/ata-GOLDEN_SSD_S3Z1NB0K-part1"
    by_path = "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part3"
    links = {by_id: "/dev/sda1", by_path: "/dev/sda3"}
    fstab = f"{by_id} / ext4 defaults 0 1\n{by_path} /srv ext4 defaults 0 2\n"
    resolve = lambda path: links.get(path, path)  # noqa: E731
    assert golden.device_aliases(fstab, "/dev/sda1", resolve) == (by_id,)
    assert golden.device_aliases(fstab, "/dev/sda3", resolve) == (by_path,)
    assert golden.device_aliases(fstab, "/dev/sda2", resolve) == ()
    assert golden.device_aliases(fstab, None, resolve) == ()
    base = plan(fstab)
    parts = tuple(dataclasses.replace(p, aliases=golden.device_aliases(fstab, p.device, resolve))
                  for p in base.partitions)
    p = dataclasses.replace(base, partitions=parts)
    ids = fixups.identity_map(p, NEW_IDS)
    (tmp_path / "etc").mkdir()
    fixups.write_fstab(str(tmp_path), p, ids)
    assert (tmp_path / "etc/fstab").read_text() == (
        f"UUID={NEW} / ext4 defaults 0 1\n"
        "UUID=33333333-3333-4333-8333-333333333333 /srv ext4 defaults 0 2\n")
    # The plan carries the aliases to the nodes.
    assert ClonePlan.from_json(p.to_json()).partitions[0].aliases == (by_id,)


def test_machine_id_is_new_each_time_and_dbus_link_kept(tmp_path: Path) -> None:
    assert fixups.new_machine_id(str(tmp_path)) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "var/lib/dbus").mkdir(parents=True)
    (tmp_path / "etc/machine-id").write_text("0" * 32 + "\n")
    os.symlink("/etc/machine-id", tmp_path / "var/lib/dbus/machine-id")
    first = fixups.new_machine_id(str(tmp_path))
    second = fixups.new_machine_id(str(tmp_path))
    assert first and second and first != second and len(second) == 32
    assert (tmp_path / "etc/machine-id").read_text() == second + "\n"
    assert os.readlink(tmp_path / "var/lib/dbus/machine-id") == "/etc/machine-id"


def test_dbus_copy_gets_the_same_id(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dbus").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("a" * 32 + "\n")
    (tmp_path / "var/lib/dbus/machine-id").write_text("a" * 32 + "\n")
    new = fixups.new_machine_id(str(tmp_path))
    assert (tmp_path / "var/lib/dbus/machine-id").read_text() == f"{new}\n"


def test_hostname_and_hosts(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 golden\n")
    fixups.set_hostname(str(tmp_path), "node07", "golden")
    assert (tmp_path / "etc/hostname").read_text() == "node07\n"
    assert (tmp_path / "etc/hosts").read_text() == "127.0.0.1 localhost\n127.0.1.1\tnode07\n"


def test_stale_network_state_is_removed(tmp_path: Path) -> None:
    files = ["etc/udev/rules.d/70-persistent-net.rules", "var/lib/dhcp/dhclient.eth0.leases",
             "var/lib/NetworkManager/internal-x.lease", "etc/dhcpc/dhcpcd-eth0.info"]
    keep = tmp_path / "etc/udev/rules.d/99-local.rules"
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    keep.write_text("keep")
    removed = fixups.remove_stale_state(str(tmp_path))
    assert sorted(removed) == sorted("/" + f for f in files)
    assert keep.exists() and not any((tmp_path / f).exists() for f in files)


def test_ssh_host_keys_are_replaced(tmp_path: Path) -> None:
    need("ssh-keygen", "openssh-client")
    ssh = tmp_path / "etc/ssh"
    ssh.mkdir(parents=True)
    (ssh / "ssh_host_rsa_key").write_text("golden key")
    (ssh / "ssh_host_rsa_key.pub").write_text("golden pub")
    made, warning = fixups.regenerate_ssh_host_keys(str(tmp_path))
    assert warning is None and "/etc/ssh/ssh_host_ed25519_key" in made
    assert (ssh / "ssh_host_rsa_key").read_text() != "golden key"
    assert fixups.regenerate_ssh_host_keys(str(tmp_path / "none")) == ([], None)


def test_excluded_directories_get_their_mode(tmp_path: Path) -> None:
    dirs = (ExcludedDir("/tmp", 0o1777, os.getuid(), os.getgid()),
            ExcludedDir("/var/cache/app", 0o2750, os.getuid(), os.getgid()))
    assert fixups.recreate_excluded(str(tmp_path), dirs) == []
    assert os.stat(tmp_path / "tmp").st_mode & 0o7777 == 0o1777
    assert os.stat(tmp_path / "var/cache/app").st_mode & 0o7777 == 0o2750


def test_boot_tools_are_found_in_the_clone(tmp_path: Path) -> None:
    assert boot.detect_tools(str(tmp_path), []) == boot.BootTools(None, None, None, None)
    for tool in ("usr/sbin/update-initramfs", "usr/sbin/grub-install", "usr/sbin/grub-mkconfig"):
        (tmp_path / tool).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / tool).write_text("#!/bin/sh\n")
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "lib/modules/6.1.0-9-amd64").mkdir(parents=True)
    assert boot.kernels(str(tmp_path)) == ["6.1.0-9-amd64"]
    tools = boot.detect_tools(str(tmp_path), boot.kernels(str(tmp_path)))
    assert tools == boot.BootTools(("/usr/sbin/update-initramfs", "-u", "-k", "all"),
                                   "/usr/sbin/grub-install", "/usr/sbin/grub-mkconfig",
                                   "/boot/grub/grub.cfg")


def test_grub_install_command_lines() -> None:
    assert boot.grub_install_argvs("/usr/sbin/grub-install", "/dev/vda", uefi=True, bios=True,
                                   esp="/boot/efi") == [
        ["/usr/sbin/grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
         "--removable", "--no-nvram", "--recheck"],
        ["/usr/sbin/grub-install", "--target=i386-pc", "--recheck", "/dev/vda"],
    ]
    assert boot.grub_install_argvs("g", "/dev/vda", uefi=False, bios=False, esp=None) == []


def test_boot_code_touches_only_the_first_440_bytes(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xaa" * 1024)
    boot.write_boot_code(str(disk), b"\x01" * 440)
    data = disk.read_bytes()
    assert data[:440] == b"\x01" * 440 and data[440:] == b"\xaa" * 584
    with pytest.raises(boot.BootloaderError):
        boot.write_boot_code(str(disk), b"\x01" * 446)
