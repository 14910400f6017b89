"""The KA method document's own golden command, verbatim, clones exactly (root only).

The document writes a desc of sizes and types only (`linux 3500`, `extended fill`, `logical
swap 500`, `logical linux fill`) and runs `-n 1 -p sda /root/desc -X sdb -r "grub --with=jfs
--with=ata_piix"` on a golden node whose disk that desc laid out: ext3 on partitions 1 (/) and
6 (/var), swap on 5. Here the golden disk is a loop disk of that layout (sizes scaled down),
mounted; the command runs as written (plus where to listen and where to keep the reports),
one `ka install` on 127.0.0.1 receives it, and the clone is compared with the golden disk:
partition table, every file and its metadata, fstab by the node's UUIDs, identity. The
initramfs tool of the clone (mkinitrd, as in the original) and grub-install are busybox
scripts that record their calls, so the `-r` options are seen to reach the initramfs tool.
Everything made (loops, mounts, processes) is removed at the end, also when an assertion fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from ka.disk import unmount_tree
from ka.lab.disks import (
    attached_image,
    expected_partitions,
    format_golden,
    fstab_entries,
    mounted,
    mounted_tree,
)
from ka.lab.golden import GoldenSpec, build_tree, write_fstab
from ka.lab.verdict import FIXED_UP, GoldenReference, judge_node
from ka.lab.verify import digest_tree
from needs import need

from .support import end_all, free_port, recording_tools, start_ka, wait_all

pytestmark = pytest.mark.root

MiB = 1024 * 1024
SIZE = 200 * MiB
# The document's desc, verbatim but for the sizes (3500 and 500 MB, scaled to this disk).
SEED_DESC = "linux 120\nextended fill\nlogical swap 16\nlogical linux fill\n"
# The layout of the golden disk that desc describes, with the filesystems it was made with.
GOLDEN_DESC = ("linux 120 fs=ext3 mount=/\nextended fill\nlogical swap 16\n"
               "logical linux fill fs=ext3 mount=/var\n")
BOOTLOADER = "grub --with=jfs --with=ata_piix"
KERNEL = "2.6.22.9-desktop-1mdv"  # mkinitrd runs only when the clone has a kernel
TIMEOUT = 180
CALLS = "calls.log"  # what the recording boot tools of the clone write


def test_the_documents_command_clones_exactly(tmp_path: Path) -> None:
    need("busybox", "busybox-static")
    expected = expected_partitions(GOLDEN_DESC, SIZE)
    assert [(p.number, p.fstype, p.mountpoint) for p in expected] == [
        (1, "ext3", "/"), (2, None, None), (5, "swap", None), (6, "ext3", "/var")]
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        golden = stack.enter_context(attached_image(tmp_path / "golden.img", SIZE))
        format_golden(golden, GOLDEN_DESC)
        root = stack.enter_context(mounted_tree(golden, expected, tmp_path / "golden",
                                                read_only=False))
        build_tree(root, GoldenSpec(data_bytes=6 * MiB, small_files=300,
                                    sparse_apparent=16 * MiB))
        (root / "lib/modules" / KERNEL).mkdir(parents=True)
        (root / "boot/grub").mkdir(parents=True)
        # What the clone's grub-mkconfig writes again on the node: the trees stay equal.
        (root / "boot/grub/grub.cfg").write_text("# generated\n")
        recording_tools(root, {"mkinitrd": "", "grub-install": "",
                               "grub-mkconfig": 'echo "# generated" > "$2"'})
        fstab = write_fstab(root, fstab_entries(golden, expected))
        os.sync()
        reference = GoldenReference(
            root=root, digest=digest_tree(root, ignore=(*FIXED_UP, CALLS)), fstab=fstab,
            machine_id=(root / "etc/machine-id").read_text().strip(), esp_device="",
            excluded=(), raw_esp=False, ignore=(CALLS,))

        node = stack.enter_context(attached_image(tmp_path / "node1.img", SIZE))
        target = tmp_path / "target"
        target.mkdir()
        stack.callback(lambda: unmount_tree(str(target)))
        stack.callback(end_all, procs)  # first of all, before anything is unmounted
        (tmp_path / "desc").write_text(SEED_DESC)
        key = tmp_path / "session.key"
        key.write_bytes(os.urandom(32))
        port = free_port()
        install = start_ka(["install", "--host", "127.0.0.1", "--port", str(port),
                            "--disk", f"sda={node.device}", "--target", str(target),
                            "--find-timeout", "60", "--status-port", "0",
                            "--key-file", str(key)], tmp_path / "node1.log", procs)
        clone = start_ka(["clone", "--root", str(root), "--port", str(port), "--bind",
                          "127.0.0.1", "--logs", str(tmp_path / "logs"), "--session-prefix",
                          "seed", "--join-timeout", "60", "--key-file", str(key),
                          "-n", "1", "-p", "sda", "desc", "-X", "sdb", "-r", BOOTLOADER],
                         tmp_path / "golden.log", procs, cwd=tmp_path)
        wait_all([clone, install], TIMEOUT)
        said = {name: (tmp_path / f"{name}.log").read_text(errors="replace")
                for name in ("golden", "node1")}
        assert (clone.returncode, install.returncode) == (0, 0), said
        drive = os.path.basename(golden.device)
        assert f"--desc sda: applied to golden disk {drive}, the only one found" in said["golden"]
        if not Path("/sys/class/block/sdb").exists():
            assert "--exclude-disk sdb: no such disk on this machine" in said["golden"]

        verdict = judge_node("node1", node, expected, reference, ["golden"],
                             tmp_path / "check", label="dos")
        assert verdict.ok, verdict.describe()
        assert verdict.tree is not None and verdict.tree.compared > 300
        with mounted(node.partition(1), tmp_path / "boot-check", "ext3", "ro,noload") as tree:
            calls = (tree / CALLS).read_text().splitlines()
        assert calls[0] == f"/usr/sbin/mkinitrd {BOOTLOADER.removeprefix('grub ')}"
        assert calls[1:4] == ["proc", "dev", "sys"]
        assert calls[4] == f"/usr/sbin/grub-install --target=i386-pc --recheck {node.device}"
        assert calls[8] == "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg"
        reports = sorted((tmp_path / "logs/seed").iterdir())
        assert [p.name for p in reports] == ["node01.json", "summary.json"]
        assert json.loads(reports[0].read_text())["result"] == "ok"
