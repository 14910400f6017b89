"""Reading the golden tree into a plan: mounts, sysfs, and a plain directory with a desc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ka.clone.golden import CloneOptions, _disk_size, build_plan, clone_mounts, partition_of
from ka.clone.hostnames import parse_pattern
from ka.clone.plan import BootloaderRequest, ExcludedDir
from ka.errors import KaError, UsageError


def test_clone_mounts_of_a_mounted_tree() -> None:
    rows = [
        {"target": "/", "source": "/dev/sda1", "fstype": "ext4"},
        {"target": "/proc", "source": "proc", "fstype": "proc"},
        {"target": "/mnt/golden", "source": "/dev/loop3p2", "fstype": "ext4"},
        {"target": "/mnt/golden/var", "source": "/dev/loop3p3", "fstype": "xfs"},
        {"target": "/mnt/golden/run", "source": "tmpfs", "fstype": "tmpfs"},
        {"target": "/mnt/goldenish", "source": "/dev/sdb1", "fstype": "ext4"},
        {"target": "/mnt/golden/srv", "source": "/dev/mapper/vg-srv[/sub]", "fstype": "btrfs"},
    ]
    mounts = clone_mounts(rows, "/mnt/golden/")
    assert [(m.mountpoint, m.source, m.fstype) for m in mounts] == [
        ("/", "/dev/loop3p2", "ext4"), ("/srv", "/dev/mapper/vg-srv", "btrfs"),
        ("/var", "/dev/loop3p3", "xfs")]
    assert [m.mountpoint for m in clone_mounts(rows, "/")] == [
        "/", "/mnt/golden", "/mnt/goldenish", "/mnt/golden/srv", "/mnt/golden/var"]


def test_partition_of_reads_sysfs(tmp_path: Path) -> None:
    disk = tmp_path / "devices/virtual/block/loop3"
    (disk / "loop3p2").mkdir(parents=True)
    (disk / "loop3p2/partition").write_text("2\n")
    (tmp_path / "class/block").mkdir(parents=True)
    os.symlink(disk / "loop3p2", tmp_path / "class/block/loop3p2")
    os.symlink(disk, tmp_path / "class/block/loop3")
    assert partition_of("/dev/loop3p2", str(tmp_path)) == ("loop3", 2)
    assert partition_of("/dev/loop3", str(tmp_path)) is None


DESC = """\
label gpt
esp 32MiB fs=vfat mount=/boot/efi
linux 200MiB fs=ext4 mount=/ label=root
swap 16MiB
linux fill fs=xfs mount=/var label=var
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "golden"
    for d in ("etc", "var/cache/apt", "var/lib", "tmp", "boot/efi", "usr/bin"):
        (root / d).mkdir(parents=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (root / "etc/hostname").write_text("golden\n")
    (tmp_path / "golden.desc").write_text(DESC)
    return root


def test_plain_directory_with_a_desc(tree: Path) -> None:
    plan = build_plan(CloneOptions(
        nodes=2, root=str(tree), prefix="p", descs={"vda": str(tree.parent / "golden.desc")},
        excludes=("/tmp", "/var/cache", "/nonexistent"), hostnames=parse_pattern("n{n}"),
        bootloader=BootloaderRequest("none"), release_delay=3,
    ))
    assert [d.name for d in plan.disks] == ["vda"] and plan.disks[0].device is None
    assert [(p.number, p.fstype, p.mountpoint, p.label, p.content) for p in plan.partitions] == [
        (1, "vfat", "/boot/efi", None, "tar"),
        (2, "ext4", "/", "root", "tar"),
        (3, "swap", None, None, "none"),
        (4, "xfs", "/var", "var", "tar"),
    ]
    assert [(s.session, s.mountpoint, s.excludes) for s in plan.streams] == [
        ("p-fs-1", "/", ("./boot/efi/*", "./var/*", "./tmp", "./nonexistent")),
        ("p-fs-2", "/var", ("./cache",)),
        ("p-fs-3", "/boot/efi", ()),
    ]
    assert plan.excluded_dirs == (
        ExcludedDir("/tmp", 0o1777, os.getuid(), os.getgid()),
        ExcludedDir("/var/cache", os.stat(tree / "var/cache").st_mode & 0o7777,
                    os.getuid(), os.getgid()),
    )
    assert any("/nonexistent" in n for n in plan.notes)
    assert all(p.used == 0 for p in plan.partitions)  # unknown: no filesystem of its own
    assert plan.golden_hostname == "golden" and plan.fstab.startswith("LABEL=root")
    assert plan.sessions == ("p-plan", "p-fs-1", "p-fs-2", "p-fs-3", "p-done")
    assert "uuid=" not in plan.disks[0].desc and "mount=/var" in plan.disks[0].desc


def test_no_layout_at_all_is_refused(tree: Path) -> None:
    with pytest.raises(UsageError, match="no golden disk"):
        build_plan(CloneOptions(nodes=1, root=str(tree)))


def test_bad_raw_partition_is_refused(tree: Path) -> None:
    with pytest.raises(UsageError, match="--raw"):
        build_plan(CloneOptions(nodes=1, root=str(tree), raws=("sdz9",),
                                descs={"vda": str(tree.parent / "golden.desc")}))


def test_mbr_file_must_hold_the_boot_code(tree: Path) -> None:
    short = tree.parent / "mbr.bin"
    short.write_bytes(b"\x00" * 100)
    with pytest.raises(UsageError, match="440"):
        build_plan(CloneOptions(nodes=1, root=str(tree), mbr_files={"vda": str(short)},
                                descs={"vda": str(tree.parent / "golden.desc")}))
    short.write_bytes(bytes(range(256)) * 2)
    plan = build_plan(CloneOptions(nodes=1, root=str(tree), mbr_files={"/dev/vda": str(short)},
                                   descs={"vda": str(tree.parent / "golden.desc")}))
    assert plan.disks[0].boot_code == (bytes(range(256)) * 2)[:440]


def test_unreadable_mbr_file_is_a_usage_error(tree: Path) -> None:
    desc = {"vda": str(tree.parent / "golden.desc")}
    with pytest.raises(UsageError, match="--mbr-file vda .*/missing.bin: No such file"):
        build_plan(CloneOptions(nodes=1, root=str(tree), descs=desc,
                                mbr_files={"vda": str(tree.parent / "missing.bin")}))


def test_excluding_a_disk_that_is_not_there_is_a_note(tree: Path) -> None:
    # The original's own example: -X sdb on a machine that may have no sdb.
    (tree / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n"
                                    "/dev/ka-no-such-disk1 /data ext4 defaults 0 2\n")
    plan = build_plan(CloneOptions(nodes=1, root=str(tree), exclude_disks=("/dev/ka-no-such-disk",),
                                   descs={"vda": str(tree.parent / "golden.desc")}))
    assert [n for n in plan.notes if "ka-no-such-disk" in n] == [
        "--exclude-disk ka-no-such-disk: no such disk on this machine, nothing to leave out "
        "(disks of the golden tree: none)"]
    assert plan.excluded_disks == ("ka-no-such-disk",)
    # its fstab entries still name no cloned disk: commented out on the nodes, not refused
    assert plan.excluded_refs == ("/dev/ka-no-such-disk1",)
    assert [s.mountpoint for s in plan.streams] == ["/", "/var", "/boot/efi"]


# The KA method document's own desc: sizes and types, no filesystem, no mount point.
SEED_DESC = "linux 3500\nextended fill\nlogical swap 500\nlogical linux fill\n"


def test_the_documents_desc_on_a_plain_directory_is_refused(tree: Path) -> None:
    (tree.parent / "desc").write_text(SEED_DESC)
    opts = CloneOptions(nodes=1, root=str(tree), descs={"sda": str(tree.parent / "desc")},
                        exclude_disks=("sdb",), bootloader=BootloaderRequest(
                            "grub", ("--with=jfs", "--with=ata_piix")))
    with pytest.raises(UsageError, match="copies nothing") as e:
        build_plan(opts)
    assert "fstab mounts / (LABEL=root)" in e.value.message
    assert e.value.hint is not None and "fs= and mount=" in e.value.hint
    assert "mounted golden disk" in e.value.hint
    (tree / "etc/fstab").unlink()  # no fstab: still nothing to copy
    with pytest.raises(UsageError, match="copies nothing") as e:
        build_plan(opts)
    assert "fstab mounts" not in e.value.message


def test_dry_run_refuses_a_plan_that_copies_nothing(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ka.cli import main

    (tree.parent / "desc").write_text(SEED_DESC)
    argv = ["clone", "--root", str(tree), "-n", "1", "-p", "sda", str(tree.parent / "desc"),
            "-X", "ka-no-such-disk", "-r", "grub --with=jfs --with=ata_piix", "--dry-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "copies nothing" in err and "fs= and mount=" in err
    # With the filesystems in the desc, the same command plans a copy, and says (on stderr,
    # with --json) that the excluded disk is not there.
    (tree.parent / "desc").write_text(
        "linux 3500 fs=ext3 mount=/\nextended fill\nlogical swap 500\n"
        "logical linux fill fs=ext3 mount=/var\n")
    assert main([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    assert '"session": "ka-fs-1"' in out
    assert "ka: note: --exclude-disk ka-no-such-disk: no such disk on this machine" in err


def test_a_filesystem_of_the_fstab_left_out_of_the_layout_is_refused(tree: Path) -> None:
    (tree / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n"
                                    "LABEL=home /home ext4 defaults 0 2\n"
                                    "tmpfs /run/shm tmpfs defaults 0 0\n")
    with pytest.raises(UsageError, match=r"fstab mounts /home \(LABEL=home\), but no "
                                         "partition of the layout holds it"):
        build_plan(CloneOptions(nodes=1, root=str(tree),
                                descs={"vda": str(tree.parent / "golden.desc")}))


def test_raw_stream_size_must_be_readable(tmp_path: Path) -> None:
    # A raw partition whose size cannot be read would skip the nodes' fit check: refuse it.

    missing = str(tmp_path / "no-such-partition")
    assert _disk_size(missing) == 0
    with pytest.raises(KaError, match="cannot read the size"):
        _disk_size(missing, required=True)
    image = tmp_path / "part.img"
    image.write_bytes(b"\0" * 4096)
    assert _disk_size(str(image), required=True) == 4096
