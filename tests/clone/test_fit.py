"""The golden side's word on node disks: the smallest that takes a golden disk, and warnings
for a layout that no node disk (or none the size of the golden's) can take."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.clone.nodedisks import fit_warnings, fits, smallest_disk
from ka.clone.plan import ClonePlan, GoldenDisk, GoldenPartition

MiB = 1 << 20
FILL = "label gpt\nesp 32MiB fs=vfat mount=/boot/efi\nlinux fill fs=ext4 mount=/\n"
FIXED = "label gpt\nlinux 100MiB fs=ext4 mount=/\nlinux fill fs=xfs mount=/var\n"


def plan(disk: GoldenDisk, *parts: GoldenPartition) -> ClonePlan:
    return ClonePlan("ka", 1, (disk,), parts, (), "")


def root(used: int, inodes: int = 0, number: int = 2) -> GoldenPartition:
    return GoldenPartition("sda", number, "ext4", "/", used=used, inodes=inodes, content="tar")


def test_the_smallest_node_disk_is_the_first_that_fits() -> None:
    golden = GoldenDisk("sda", FILL, size=1024 * MiB)
    p = plan(golden, root(300 * MiB))
    need = smallest_disk(golden, p)
    assert need is not None
    assert fits(golden, need, p) is None
    reason = fits(golden, need - MiB, p)
    assert reason is not None and reason.startswith("needs at least ")
    assert fit_warnings(p) == []


def test_a_golden_disk_larger_than_its_clones_can_be_is_said() -> None:
    # The golden's own disk is 200 MiB: a clone of its size could not hold 300 MiB.
    golden = GoldenDisk("sda", FILL, size=200 * MiB)
    p = plan(golden, root(300 * MiB))
    need = smallest_disk(golden, p)
    assert need is not None and need > 200 * MiB
    (warning,) = fit_warnings(p)
    assert warning.startswith("golden disk sda: a node disk of its size (200 MiB) cannot "
                              "take it: needs at least ")
    assert "for /, the layout gives 166 MiB" in warning
    assert warning.endswith(f"the nodes need {need >> 20} MiB")


def test_a_fixed_partition_too_small_for_its_data_fits_no_disk() -> None:
    golden = GoldenDisk("sda", FIXED, size=4096 * MiB)
    p = plan(golden, root(150 * MiB, number=1))
    assert smallest_disk(golden, p) is None
    (warning,) = fit_warnings(p)
    assert warning.startswith("golden disk sda: no node disk can take it: needs at least "
                              "173 MiB for /, the layout gives 100 MiB")


def test_dry_run_says_the_smallest_node_disk_and_warns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import ka.clone.cli as clone_cli
    from ka.cli import main

    golden = GoldenDisk("sda", FIXED, size=4096 * MiB)
    monkeypatch.setattr(clone_cli, "build_plan",
                        lambda opts: plan(golden, root(150 * MiB, number=1)))
    assert main(["clone", "--root", str(tmp_path), "-n", "2", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "golden disk sda (-, 4096 MiB; fits no node disk):" in out
    assert ("ka: warning: golden disk sda: no node disk can take it: needs at least 173 MiB "
            "for /, the layout gives 100 MiB") in err
    monkeypatch.setattr(clone_cli, "build_plan",
                        lambda opts: plan(golden, root(50 * MiB, number=1)))
    assert main(["clone", "--root", str(tmp_path), "-n", "2", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    # 100 MiB for / and the 300 MiB that mkfs.xfs needs at least for /var.
    assert "golden disk sda (-, 4096 MiB; node disks of at least 402 MiB):" in out
    assert "warning: golden disk" not in err
