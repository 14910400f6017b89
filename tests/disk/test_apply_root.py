"""Root tests on loop devices over small sparse files: partition, format, mount, probe."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ka.disk import (
    DiskBusy,
    DoesNotFit,
    Layout,
    apply_plan,
    ensure_partition_nodes,
    parse_desc,
    plan_layout,
    probe,
    unmount_tree,
)
from ka.disk.devices import blkid_probe, mounts
from ka.disk.layout import GIB, MIB
from ka.errors import CommandError, ToolMissingError
from ka.run import available, run
from needs import need

from .conftest import kernel_supports, sfdisk_json

pytestmark = pytest.mark.root

LoopDisk = Callable[..., str]
SEED = "linux 3500\nextended fill\nlogical swap 500\nlogical linux fill\n"


def test_seed_example_on_8_gib(loop_disk: LoopDisk) -> None:
    dev = loop_disk(8 * GIB)
    plan = plan_layout(parse_desc(SEED, "seed.desc"), 8 * GIB)
    apply_plan(plan, dev)
    table = sfdisk_json(dev)
    assert table["label"] == "dos"
    got = [(p["node"], p["start"], p["size"], p["type"]) for p in table["partitions"]]
    total = 8 * GIB // 512
    assert got == [
        (f"{dev}p1", 2048, 3500 * 2048, "83"),
        (f"{dev}p2", 3501 * 2048, total - 3501 * 2048, "5"),
        (f"{dev}p5", 3502 * 2048, 500 * 2048, "82"),
        (f"{dev}p6", 4003 * 2048, total - 4003 * 2048, "83"),
    ]
    assert blkid_probe(f"{dev}p5")["TYPE"] == "swap"


def test_gpt_esp_root_var_swap_mounted(loop_disk: LoopDisk, tmp_path: Path) -> None:
    dev = loop_disk(400 * MIB)
    text = (
        "label gpt\n"
        "esp 40MiB fs=vfat mount=/boot/efi label=EFI\n"
        "linux 150MiB fs=ext4 mount=/ label=root\n"
        "swap 32MiB label=swap\n"
        "linux fill fs=btrfs mount=/var label=var options=noatime\n"
    )
    layout = parse_desc(text)
    if not kernel_supports("vfat"):  # this kernel cannot mount vfat: check it with blkid only
        parts = [
            dataclasses.replace(p, mountpoint=None) if p.fs == "vfat" else p
            for p in layout.partitions
        ]
        layout = Layout(layout.label, tuple(parts))
    target = tmp_path / "target"
    plan = plan_layout(layout, 400 * MIB)
    uuid = "6b4c3f2e-1d0a-4e8b-9c7d-5a6b7c8d9e0f"
    applied = apply_plan(plan, dev, target=str(target), uuids={2: uuid})
    table = sfdisk_json(dev)
    assert table["label"] == "gpt"
    assert [p["type"] for p in table["partitions"]] == [
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    ]
    last = table["partitions"][-1]
    assert last["start"] + last["size"] - 1 == table["lastlba"]  # fill took exactly the rest
    by_target = {m.target: m for m in mounts()}
    assert by_target[str(target)].fstype == "ext4"
    assert by_target[str(target / "var")].fstype == "btrfs"
    assert "noatime" in by_target[str(target / "var")].options
    assert applied.mounted[0] == str(target)
    info = {n: blkid_probe(f"{dev}p{n}") for n in (1, 2, 3, 4)}
    assert (info[1]["TYPE"], info[1]["LABEL"]) == ("vfat", "EFI")
    assert (info[2]["TYPE"], info[2]["LABEL"], info[2]["UUID"]) == ("ext4", "root", uuid)
    assert (info[3]["TYPE"], info[3]["LABEL"]) == ("swap", "swap")
    assert applied.partitions[1][3] == uuid and applied.partitions[3].uuid == info[4]["UUID"]
    (target / "var" / "probe").write_text("ok")
    unmount_tree(str(target))
    assert not [m for m in mounts() if m.target.startswith(str(target))]


def test_every_filesystem_type(loop_disk: LoopDisk, tmp_path: Path) -> None:
    dev = loop_disk(600 * MIB)
    text = (
        "label gpt\n"
        "linux 310MiB fs=xfs mount=/ label=x\n"
        "linux 16MiB fs=ext2 mount=/e2 label=e2\n"
        "linux 16MiB fs=ext3 mount=/e3 label=e3\n"
        "linux 32MiB fs=ext4 mount=/e4 label=e4\n"
        "linux 120MiB fs=btrfs mount=/b label=b\n"
        "esp 40MiB fs=vfat label=V\n"
        "swap 16MiB label=s\n"
    )
    uuids = {
        1: "11111111-1111-4111-8111-111111111111",
        2: "22222222-2222-4222-8222-222222222222",
        3: "33333333-3333-4333-8333-333333333333",
        4: "44444444-4444-4444-8444-444444444444",
        5: "55555555-5555-4555-8555-555555555555",
        6: "ABCD-1234",
        7: "77777777-7777-4777-8777-777777777777",
    }
    target = tmp_path / "t"
    plan = plan_layout(parse_desc(text), 600 * MIB)
    apply_plan(plan, dev, target=str(target), uuids=uuids)
    for p in plan.partitions:
        info = blkid_probe(f"{dev}p{p.number}")
        assert (info["TYPE"], info["UUID"], info["LABEL"]) == (p.fs, uuids[p.number], p.label)
    fstypes = {m.target: m.fstype for m in mounts()}
    for sub, fs in (
        ("", "xfs"),
        ("/e2", "ext2"),
        ("/e3", "ext3"),
        ("/e4", "ext4"),
        ("/b", "btrfs"),
    ):
        assert fstypes[f"{target}{sub}"] == fs
    # This kernel may not mount vfat: read it with mtools instead.
    out = run([need("mdir", "mtools"), "-i", f"{dev}p6", "::"],
              env={"MTOOLS_SKIP_CHECK": "1"}).stdout
    assert "Volume in drive : is V" in out
    # Swap is "mounted" by swapon; a disk with active swap is then refused like a mounted one.
    unmount_tree(str(target))
    run(["swapon", f"{dev}p7"])
    try:
        assert f"{dev}p7 " in Path("/proc/swaps").read_text()
        with pytest.raises(DiskBusy, match="active swap"):
            apply_plan(plan, dev, dry_run=True)
    finally:
        run(["swapoff", f"{dev}p7"])


def test_jfs_is_made_with_its_label_and_uuid(loop_disk: LoopDisk) -> None:
    need("mkfs.jfs", "jfsutils")
    dev = loop_disk(64 * MIB)
    uuid = "11111111-2222-4333-8444-555555555555"
    plan = plan_layout(parse_desc(f"label gpt\nlinux fill fs=jfs label=j uuid={uuid}\n"), 64 * MIB)
    apply_plan(plan, dev)
    info = blkid_probe(f"{dev}p1")
    assert (info["TYPE"], info["LABEL"], info["UUID"]) == ("jfs", "j", uuid)


def test_a_missing_mkfs_is_a_clear_error_before_the_table_is_written(
        loop_disk: LoopDisk) -> None:
    # scripts/setup.sh leaves reiserfsprogs out on purpose, so that this refusal is tested.
    if available("mkfs.reiserfs"):
        pytest.skip("reiserfsprogs is installed here: the refusal of a missing mkfs is not "
                    "tested (scripts/setup.sh leaves it out)")
    dev = loop_disk(64 * MIB)
    plan = plan_layout(parse_desc("label gpt\nlinux fill fs=reiserfs label=j\n"), 64 * MIB)
    with pytest.raises(ToolMissingError) as info:
        apply_plan(plan, dev)
    assert info.value.hint and "reiserfsprogs" in info.value.hint
    assert sfdisk_json(dev) == {}  # refused before the table was written


@pytest.mark.parametrize(
    "text",
    [
        "label gpt\nesp 32MiB fs=vfat label=EFI name=efi\nbios 1MiB\nlinux 100MiB fs=ext4 "
        "label=root boot\nswap 20MiB label=sw\nlinux fill fs=btrfs label=data name=data\n",
        "label dos\nlinux 100MiB fs=ext4 label=root boot\nextended fill\nlogical swap 20MiB\n"
        "logical linux 50MiB fs=ext2\nlogical linux fill\n",
    ],
)
def test_probe_desc_apply_probe_round_trip(loop_disk: LoopDisk, text: str) -> None:
    # The second disk is larger: the probed desc ends in `fill`, so it fits any size.
    a, b = loop_disk(300 * MIB), loop_disk(500 * MIB)
    apply_plan(plan_layout(parse_desc(text), 300 * MIB), a)
    desc_a = probe([a])[a].to_desc()
    assert parse_desc(desc_a).to_desc() == desc_a
    assert desc_a == parse_desc(text).to_desc()  # the probe says what was applied
    apply_plan(plan_layout(parse_desc(desc_a, "probed.desc"), 500 * MIB), b)
    assert probe([b])[b].to_desc() == desc_a
    last = sfdisk_json(b)["partitions"][-1]
    assert (last["start"] + last["size"]) * 512 > 450 * MIB  # the fill took the larger rest


def test_probe_cli_reports_mount_points(loop_disk: LoopDisk, tmp_path: Path) -> None:
    dev = loop_disk(100 * MIB)
    target = tmp_path / "m"
    apply_plan(
        plan_layout(parse_desc("label gpt\nlinux fill fs=ext4 mount=/ label=r\n"), 100 * MIB),
        dev,
        target=str(target),
    )
    out = subprocess.run(
        [sys.executable, "-m", "ka", "desc", "probe", dev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"linux fill fs=ext4 mount={target} label=r" in out
    assert out.startswith(f"# {dev}: 100 MiB")


def test_layout_that_does_not_fit_touches_nothing(loop_disk: LoopDisk) -> None:
    dev = loop_disk(64 * MIB)
    apply_plan(plan_layout(parse_desc("label dos\nlinux fill fs=ext4\n"), 64 * MIB), dev)
    before = sfdisk_json(dev)
    big = parse_desc("label gpt\nlinux 100MiB fs=ext4\n")
    with pytest.raises(DoesNotFit):
        plan_layout(big, 64 * MIB)
    with pytest.raises(DoesNotFit):  # a plan made for a larger disk
        apply_plan(plan_layout(big, GIB), dev)
    assert sfdisk_json(dev) == before
    assert blkid_probe(f"{dev}p1")["TYPE"] == "ext4"


def test_mounted_disk_is_refused(loop_disk: LoopDisk, tmp_path: Path) -> None:
    dev = loop_disk(64 * MIB)
    layout = parse_desc("label gpt\nlinux fill fs=ext4 mount=/\n")
    apply_plan(plan_layout(layout, 64 * MIB), dev, target=str(tmp_path / "busy"))
    before = sfdisk_json(dev)
    with pytest.raises(DiskBusy) as info:
        apply_plan(plan_layout(layout, 64 * MIB), dev)
    assert "mounted" in str(info.value)
    with pytest.raises(DiskBusy):
        apply_plan(plan_layout(layout, 64 * MIB), dev, dry_run=True)
    assert sfdisk_json(dev) == before


def test_running_root_is_refused() -> None:
    root = next((m.source for m in mounts() if m.target == "/"), "")
    disks = [d for d in probe_candidates() if root.startswith(d)]
    if not disks:
        pytest.skip(f"the root filesystem ({root or 'unknown'}) is not on a whole disk here")
    disk = disks[0]
    from ka.disk import disk_size

    plan = plan_layout(parse_desc("label gpt\nlinux 1GiB\n"), disk_size(disk))
    with pytest.raises(DiskBusy) as info:
        apply_plan(plan, disk, dry_run=True)
    assert "running root" in str(info.value)


def probe_candidates() -> list[str]:
    return [
        f"/dev/{p.name}"
        for p in Path("/sys/block").iterdir()
        if not p.name.startswith(("loop", "ram", "zram"))
    ]


def test_cli_apply_needs_yes_off_a_terminal_and_dry_run_changes_nothing(
    loop_disk: LoopDisk, tmp_path: Path
) -> None:
    dev = loop_disk(64 * MIB)
    desc = tmp_path / "l.desc"
    desc.write_text("label gpt\nlinux 20MiB fs=ext4\nswap fill\nlinux 1GiB fs=ext9\n")
    cmd = [sys.executable, "-m", "ka", "desc", "apply", str(desc), dev]
    wrong = subprocess.run([*cmd, "--yes"], capture_output=True, text=True)  # line 4 is wrong
    assert wrong.returncode == 2 and f"{desc}:4:12: expected a filesystem" in wrong.stderr
    assert "nothing was applied" in wrong.stderr
    assert sfdisk_json(dev) == {}
    desc.write_text("label gpt\nlinux 20MiB fs=ext4\nswap fill\n")
    refused = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, check=True)
    assert "sfdisk --quiet --wipe always" in dry.stdout and "mkswap" in dry.stdout
    assert sfdisk_json(dev) == {}
    done = subprocess.run([*cmd, "--yes"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [p["size"] for p in sfdisk_json(dev)["partitions"]][0] == 20 * 2048


def test_failed_step_undoes_the_mounts(loop_disk: LoopDisk, tmp_path: Path) -> None:
    dev = loop_disk(100 * MIB)
    text = (
        "label gpt\nlinux 40MiB fs=ext4 mount=/\nlinux fill fs=ext4 mount=/var options=nosuchopt\n"
    )
    target = tmp_path / "t"
    with pytest.raises(CommandError) as info:
        apply_plan(plan_layout(parse_desc(text), 100 * MIB), dev, target=str(target))
    assert info.value.argv[0] == "mount" and "options" in (info.value.hint or "")
    assert not [m for m in mounts() if m.target.startswith(str(target))]


def test_missing_partition_nodes_are_made_from_sysfs(loop_disk: LoopDisk) -> None:
    dev = loop_disk(64 * MIB)
    apply_plan(plan_layout(parse_desc("label gpt\nlinux 20MiB\nlinux fill\n"), 64 * MIB), dev)
    node = Path(f"{dev}p2")
    rdev = node.stat().st_rdev
    node.unlink()
    assert ensure_partition_nodes(dev) == [str(node)]
    assert node.stat().st_rdev == rdev and stat.S_ISBLK(node.stat().st_mode)
    assert ensure_partition_nodes(dev) == []


def test_4k_sector_disk(loop_disk: LoopDisk) -> None:
    from ka.disk import sector_size

    dev = loop_disk(128 * MIB, 4096)
    assert sector_size(dev) == 4096
    layout = parse_desc("label gpt\nesp 33MiB fs=vfat\nlinux fill fs=ext4 label=r\n")
    with pytest.raises(DoesNotFit):  # a plan for 512-byte sectors is refused
        apply_plan(plan_layout(layout, 128 * MIB), dev)
    apply_plan(plan_layout(layout, 128 * MIB, 4096), dev)
    table = sfdisk_json(dev)
    assert table["sectorsize"] == 4096
    assert [(p["start"], p["size"]) for p in table["partitions"]][0] == (256, 33 * 256)
    last = table["partitions"][-1]
    assert last["start"] + last["size"] - 1 == table["lastlba"]
    assert blkid_probe(f"{dev}p2")["LABEL"] == "r"


def test_probe_without_arguments_lists_the_machine_disks_not_loops(loop_disk: LoopDisk) -> None:
    from ka.disk import probe_disks

    dev = loop_disk(64 * MIB)
    reports = probe_disks()
    assert dev not in [r.device for r in reports]
    for r in reports:
        assert r.size > 0 and r.sector_size >= 512
        assert r.layout.partitions or r.note  # an empty layout always says why


def test_a_failing_mkfs_says_why_even_on_stdout(
    loop_disk: LoopDisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "mkfs.jfs"  # mkfs.jfs explains its refusals on stdout only
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Partition must be at least 16 megabytes.'\nexit 22\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    dev = loop_disk(64 * MIB)
    with pytest.raises(CommandError) as info:
        apply_plan(plan_layout(parse_desc("label gpt\nlinux fill fs=jfs\n"), 64 * MIB), dev)
    assert info.value.returncode == 22 and info.value.argv[0] == "mkfs.jfs"
    assert "at least 16 megabytes" in str(info.value)
