"""End to end: `ka clone` on a golden disk to N lab nodes running `ka install`, all verified.

Small disks (640 MiB, so that /var fits an xfs) and a small golden tree that still holds every
kind of file, so that the whole file stays within a few minutes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ka.lab.clone import LabCloneOptions, lab_clone
from ka.lab.report import LabCloneReport, summary_table
from ka.run import run

MiB = 1024 * 1024
SMALL = LabCloneOptions(nodes=3, rate="1gbit", size=640 * MiB, data_bytes=24 * MiB,
                        small_files=1500, timeout=300.0)

# Each clone gives up after 300 s (SMALL.timeout): the test only if that fails too.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


def _run(workdir: Path, **changes: object) -> LabCloneReport:
    options = LabCloneOptions(**{**SMALL.__dict__, "workdir": workdir, **changes})
    report = lab_clone(options)
    print(summary_table(report))
    return report


def _verified(report: LabCloneReport, node: str) -> None:
    outcome = report.node(node)
    assert outcome.status == 0, outcome.log_tail
    assert outcome.verdict is not None and outcome.verdict.ok, outcome.verdict.describe() \
        if outcome.verdict else outcome.log_tail
    assert outcome.verdict.tree is not None and outcome.verdict.tree.compared > 1500


def test_three_nodes_every_clone_verified(leaves_nothing: Path) -> None:
    report = _run(leaves_nothing)
    assert report.golden_status == 0, report.golden_log_tail
    for node in ("node1", "node2", "node3"):
        _verified(report, node)
    assert report.identities.ok, report.identities.detail
    names = {o.verdict.hostname for o in report.nodes if o.verdict}
    assert names == {"node01", "node02", "node03"}
    assert report.ok


def test_too_small_disk_fails_alone(leaves_nothing: Path) -> None:
    report = _run(leaves_nothing, node_sizes=((2, 256 * MiB),))
    small = report.node("node2")
    assert small.status not in (0, None)
    assert any(word in small.log_tail.lower() for word in ("too small", "does not fit")), \
        small.log_tail
    _verified(report, "node1")
    _verified(report, "node3")
    assert report.golden_status != 0
    assert not report.ok


def test_a_root_too_small_for_the_golden_data_is_refused_before_the_disk_is_touched(
        leaves_nothing: Path) -> None:
    # 420 MiB takes the layout (ESP, the 320 MiB of /var, swap) and leaves 34 MiB for /,
    # where the golden's / holds about 38 MiB of the 48 MiB of data.
    report = _run(leaves_nothing, nodes=2, data_bytes=48 * MiB, node_sizes=((1, 420 * MiB),))
    small = report.node("node1")
    assert small.status == 21, small.log_tail  # no local disk for the golden disk
    assert "needs at least" in small.log_tail and "MiB for /, the layout gives 34 MiB" in \
        small.log_tail, small.log_tail
    assert small.disk_written == 0, "the refused node's disk was written to"
    _verified(report, "node2")
    assert report.node("node2").disk_written > 0
    assert report.golden_status != 0


def test_middle_node_killed_during_filesystem_session(leaves_nothing: Path) -> None:
    report = _run(leaves_nothing, rate="100mbit", kill_node=2)
    killed = report.node("node2")
    assert killed.killed and killed.status != 0
    _verified(report, "node1")
    _verified(report, "node3")
    assert report.golden_status != 0


def test_exclude_and_raw_partition_honoured(leaves_nothing: Path) -> None:
    excluded = ("/var/log/app", "/home/user/日本語")
    report = _run(leaves_nothing, nodes=1, excludes=excluded, raw_esp=True)
    _verified(report, "node1")
    verdict = report.node("node1").verdict
    assert verdict is not None
    checks = {c.name: c for c in verdict.checks}
    assert checks["excluded directories empty"].ok
    assert checks["ESP (vfat) raw copy"].ok
    # The excluded directories exist in the clone with their own mode and owner: the tree
    # comparison kept them (only their contents were left out).
    assert verdict.tree is not None and verdict.tree.ok
    assert report.ok


def test_command_line_prints_the_summary_and_leaves_nothing(leaves_nothing: Path) -> None:
    before = set(os.listdir("/var/tmp"))
    result = run([sys.executable, "-m", "ka", "lab", "clone", "--nodes", "1", "--size", "640MiB",
                  "--data", "8MiB"], check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RESULT: every clone verified" in result.stdout
    assert [line.split()[:2] for line in result.stdout.splitlines()
            if line.startswith("node1 ")] == [["node1", "ok"]]
    assert set(os.listdir("/var/tmp")) <= before


def test_from_an_image_the_golden_disk_deleted_every_clone_verified(
        leaves_nothing: Path) -> None:
    report = _run(leaves_nothing, image=True)
    assert report.golden_status == 0, report.golden_log_tail
    assert "--image" in report.clone_argv and "--root" not in report.clone_argv
    assert report.capture is not None and report.capture[1] > 0
    assert not (leaves_nothing / "golden.img").exists()  # deployed from the image alone
    for node in ("node1", "node2", "node3"):
        _verified(report, node)
    assert report.identities.ok, report.identities.detail
    assert report.ok


def test_an_image_that_does_not_fit_a_node_fails_that_node_alone(leaves_nothing: Path) -> None:
    report = _run(leaves_nothing, nodes=2, image=True, node_sizes=((1, 256 * MiB),))
    small = report.node("node1")
    assert small.status not in (0, None)
    assert any(word in small.log_tail.lower() for word in ("too small", "does not fit")), \
        small.log_tail
    _verified(report, "node2")
    assert report.golden_status != 0


def _waves(report: LabCloneReport) -> dict[str, list[tuple[int, str]]]:
    assert report.served is not None, report.golden_log_tail
    out: dict[str, list[tuple[int, str]]] = {}
    for row in report.served["nodes"]:
        out.setdefault(row["node"], []).append((row["wave"], row["result"]))
    return out


def test_serve_installs_a_late_node_and_a_killed_node_again_until_enough(
        leaves_nothing: Path) -> None:
    """node3 arrives after the first wave's filesystem session started; node2 is killed
    during its install and starts again; --until 3 ends the run once all three are in."""
    report = _run(leaves_nothing, image=True, serve=True, late_node=3, kill_node=2,
                  restart_killed=True)
    assert report.golden_status == 0, report.golden_log_tail
    for node in ("node1", "node2", "node3"):
        _verified(report, node)
    names = {o.node: o.verdict.hostname for o in report.nodes if o.verdict}
    assert len(set(names.values())) == 3, names  # waves count names on
    waves = _waves(report)
    first = {w for rows in waves.values() for w, _r in rows if w == 1}
    assert first == {1}
    assert waves[names["node3"]][-1][0] > 1, waves  # the late node: a later wave
    # node2's first attempt failed in wave 1 under the name it then had; its second, in a
    # later wave, installed it.
    assert any(r == "failed" for rows in waves.values() for _w, r in rows), waves
    assert waves[names["node2"]][-1][1] == "ok" and waves[names["node2"]][-1][0] > 1, waves
    assert report.served is not None and report.served["ok"] is True
    assert sum(1 for rows in waves.values() for _w, r in rows if r == "ok") == 3
    assert report.ok


def test_serve_ends_on_sigterm_with_a_summary_and_a_failure_status(
        leaves_nothing: Path) -> None:
    report = _run(leaves_nothing, nodes=2, image=True, serve=True, term_golden=True)
    assert report.golden_status not in (0, None)
    assert "interrupted" in report.golden_log_tail, report.golden_log_tail
    assert report.served is not None and report.served["interrupted"] is True
    assert report.served["ok"] is False
