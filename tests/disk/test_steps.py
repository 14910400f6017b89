"""The apply plan as exact commands (pure), device naming, and the CLI without a disk."""

from __future__ import annotations

import pytest

from ka.cli import main
from ka.disk import parse_desc, partition_device, plan_layout, plan_steps
from ka.disk.apply import mkfs_commands, vfat_volume_id
from ka.disk.layout import GIB
from ka.errors import UsageError

pytestmark = pytest.mark.usefixtures("no_subprocess")

U = "0fc63daf-8483-4772-8e79-3d69d8477de4"
GPT = """label gpt
esp 512MiB fs=vfat mount=/boot/efi label=EFI
linux 4GiB fs=ext4 mount=/ label=root options=noatime
linux 2GiB fs=xfs mount=/var/log
linux 1GiB fs=btrfs mount=/var
swap 1GiB label=sw
linux fill
"""


@pytest.mark.parametrize(
    ("disk", "number", "node"),
    [
        ("/dev/sda", 1, "/dev/sda1"),
        ("/dev/vdb", 12, "/dev/vdb12"),
        ("/dev/nvme0n1", 2, "/dev/nvme0n1p2"),
        ("/dev/mmcblk0", 1, "/dev/mmcblk0p1"),
        ("/dev/loop3", 5, "/dev/loop3p5"),
        ("/dev/md0", 1, "/dev/md0p1"),
        ("/dev/disk/by-id/ata-X", 3, "/dev/disk/by-id/ata-X-part3"),
    ],
)
def test_partition_device(disk: str, number: int, node: str) -> None:
    assert partition_device(disk, number) == node


def test_steps_are_exact_commands_in_order() -> None:
    plan = plan_layout(parse_desc(GPT), 16 * GIB)
    uuids = {1: "ABCD-1234", 2: "0fc63daf-8483-4772-8e79-3d69d8477de4"}
    steps = plan_steps(plan, "/dev/vdb", target="/mnt/t", uuids=uuids, old_partitions=["/dev/vdb1"])
    argvs = [s.argv for s in steps if s.argv]
    assert argvs[0] == ("wipefs", "--all", "/dev/vdb1")
    assert argvs[1] == ("wipefs", "--all", "/dev/vdb")
    assert argvs[2] == ("sfdisk", "--quiet", "--wipe", "always", "/dev/vdb")
    assert steps[2].input == plan.sfdisk_script()
    assert steps[3].action == "partition-nodes"
    assert ("mkfs.vfat", "-F", "32", "-n", "EFI", "-i", "ABCD1234", "/dev/vdb1") in argvs
    assert ("mkfs.ext4", "-F", "-q", "-L", "root", "-U", uuids[2], "/dev/vdb2") in argvs
    assert ("mkfs.xfs", "-f", "-q", "/dev/vdb3") in argvs
    assert ("mkfs.btrfs", "-f", "-q", "/dev/vdb4") in argvs
    assert ("mkswap", "-L", "sw", "/dev/vdb5") in argvs
    assert ("wipefs", "--all", "/dev/vdb6") in argvs  # no fs: only cleaned
    assert not any(a[0].startswith("mkfs") and a[-1] == "/dev/vdb6" for a in argvs)
    mounts = [a for a in argvs if a[0] == "mount"]
    assert mounts == [
        ("mount", "-t", "ext4", "-o", "noatime", "/dev/vdb2", "/mnt/t"),
        ("mount", "-t", "btrfs", "/dev/vdb4", "/mnt/t/var"),
        ("mount", "-t", "vfat", "/dev/vdb1", "/mnt/t/boot/efi"),
        ("mount", "-t", "xfs", "/dev/vdb3", "/mnt/t/var/log"),
    ]
    # every mount point is created right before its mount
    for i, s in enumerate(steps):
        if s.argv[:1] == ("mount",):
            assert steps[i - 1].argv == ("mkdir", "-p", s.argv[-1])


def test_mbr_steps_skip_the_extended_partition() -> None:
    text = "linux 3500\nextended fill\nlogical swap 500\nlogical linux fill\n"
    plan = plan_layout(parse_desc(text), 8 * GIB)
    steps = plan_steps(plan, "/dev/nvme0n1")
    nodes = [s.argv[-1] for s in steps if s.argv[:2] == ("wipefs", "--all")]
    assert nodes == ["/dev/nvme0n1", "/dev/nvme0n1p1", "/dev/nvme0n1p5", "/dev/nvme0n1p6"]
    assert ("mkswap", "/dev/nvme0n1p5") in [s.argv for s in steps]


@pytest.mark.parametrize(
    ("fs", "argv"),
    [
        ("ext2", [("mkfs.ext2", "-F", "-q", "-L", "l", "-U", U, "/dev/x1")]),
        ("ext3", [("mkfs.ext3", "-F", "-q", "-L", "l", "-U", U, "/dev/x1")]),
        ("xfs", [("mkfs.xfs", "-f", "-q", "-L", "l", "-m", f"uuid={U}", "/dev/x1")]),
        ("btrfs", [("mkfs.btrfs", "-f", "-q", "-L", "l", "-U", U, "/dev/x1")]),
        ("swap", [("mkswap", "-L", "l", "-U", U, "/dev/x1")]),
        ("jfs", [("mkfs.jfs", "-q", "-L", "l", "/dev/x1"), ("jfs_tune", "-U", U, "/dev/x1")]),
        ("reiserfs", [("mkfs.reiserfs", "-q", "-f", "-l", "l", "-u", U, "/dev/x1")]),
    ],
)
def test_mkfs_commands(fs: str, argv: list[tuple[str, ...]]) -> None:
    assert mkfs_commands(fs, "/dev/x1", label="l", uuid=U, size_bytes=GIB, role="linux") == argv


def test_vfat_volume_id() -> None:
    assert vfat_volume_id("abcd-1234") == "ABCD1234"
    assert vfat_volume_id("0fc63daf-8483-4772-8e79-3d69d8477de4") == "0FC63DAF"
    with pytest.raises(UsageError):
        vfat_volume_id("12-34")
    small = mkfs_commands("vfat", "/dev/x1", label=None, uuid=None, size_bytes=32 << 20, role="esp")
    assert small == [("mkfs.vfat", "/dev/x1")]


def test_cli_check_prints_plan(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "seed.desc"
    f.write_text("linux 3500\nextended fill\nlogical swap 500\nlogical linux fill\n")
    assert main(["desc", "check", str(f), "--size", "8GiB"]) == 0
    out = capsys.readouterr().out
    assert "label dos" in out and "7168000" in out and "logical" in out


def test_cli_check_reports_errors_and_misfits(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "bad.desc"
    f.write_text("label gpt\nlinux 3GiB\nlinux fill\n")
    assert main(["desc", "check", str(f), "--size", "3GiB"]) == 3
    err = capsys.readouterr().err
    assert (
        f"{f}:2:7: partition 1 (`linux 3GiB`)" in err and "smallest disk it fits is 3074 MiB" in err
    )
    f.write_text("linux 10\nlinux ten\n")
    assert main(["desc", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2:7:" in err and "hint" in err
    f.write_text("linux 100\nextended 50\nlogical linux 50\n")  # the EBR's MiB never fits
    assert main(["desc", "check", str(f)]) == 3
    assert f"{f}: this layout fits no disk" in capsys.readouterr().err


def test_cli_check_bad_input_is_an_error_not_a_traceback(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "binary.desc"
    f.write_bytes(b"linux 100\n\xff\xfe\n")
    assert main(["desc", "check", str(f)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    f.write_text("linux fill\n")
    for sector in ("1000", "0", "-512", "131072"):
        assert main(["desc", "check", str(f), "--size", "8GiB", "--sector-size", sector]) == 2
        assert "--sector-size" in capsys.readouterr().err
    assert main(["desc", "check", str(f), "--size", "8GiB", "--sector-size", "4096"]) == 0
    assert "sectors of 4096 bytes" in capsys.readouterr().out
    assert main(["desc", "check", str(f), "--disk", "/dev/loop0", "--sector-size", "4096"]) == 2
    assert main(["desc", "check", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_filesystem_floors_are_checked_before_the_disk() -> None:
    from ka.disk import DoesNotFit
    from ka.disk.apply import check_filesystem_sizes

    check_filesystem_sizes(plan_layout(parse_desc("label gpt\nlinux 300MiB fs=xfs\n"), GIB))
    with pytest.raises(DoesNotFit) as info:
        check_filesystem_sizes(plan_layout(parse_desc("label gpt\nlinux 100MiB fs=xfs\n"), GIB))
    assert "xfs" in str(info.value) and "partition 1" in str(info.value)
    for fs, floor in (("jfs", 16), ("reiserfs", 33)):
        text = f"label gpt\nlinux {floor - 1}MiB fs={fs}\nlinux {floor}MiB fs={fs}\n"
        with pytest.raises(DoesNotFit, match=f"partition 1 .* too small for {fs}"):
            check_filesystem_sizes(plan_layout(parse_desc(text), GIB))


def test_a_malformed_uuid_is_refused_while_planning() -> None:
    plan = plan_layout(parse_desc("label gpt\nlinux fill fs=ext4\n"), GIB)
    with pytest.raises(UsageError):
        plan_steps(plan, "/dev/vdb", uuids={1: "ABCD-1234"})


def test_unmount_tree_refuses_the_root() -> None:
    from ka.disk import unmount_tree
    from ka.errors import KaError

    with pytest.raises(KaError):
        unmount_tree("/")


@pytest.mark.parametrize("target", ["/", "//", "/tmp/..", "FILE"])
def test_the_running_root_or_a_file_is_never_a_target(target: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ka.disk import apply_plan

    if target == "FILE":
        target = str(tmp_path / "a-file")
        open(target, "w").close()
    plan = plan_layout(parse_desc("label gpt\nlinux fill fs=ext4 mount=/\n"), GIB)
    for dry_run in (True, False):
        with pytest.raises(UsageError, match="over /|not a directory"):
            apply_plan(plan, "/dev/vdz", target=target, dry_run=dry_run)


def test_cli_names_what_is_wrong_with_a_disk(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    desc = tmp_path / "l.desc"
    desc.write_text("linux fill\n")
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    assert main(["desc", "apply", str(desc), str(image), "--dry-run"]) == 1
    assert "losetup --find --show --partscan" in capsys.readouterr().err
    assert main(["desc", "check", str(desc), "--disk", "/dev/no-such-disk"]) == 1
    assert "not a whole disk" in capsys.readouterr().err
