"""The broadcast benchmark's harness runs end to end on a tiny stream (figures not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]  # the harness itself: 300 s

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "broadcast.py"


def test_every_method_delivers_a_verified_copy(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--quick",
            "--scenario",
            "open",
            "--nodes",
            "2",
            "--size-mib",
            "2",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(figures.read_text())
    # the original built from its sources (gcc-multilib), beside ka with and without a key
    assert sorted(r["method"] for r in runs) == ["ka", "ka-open", "original", "udpcast", "unicast"]
    for run in runs:
        assert run["ok"], run["error"]
        assert run["size"] == 2 * 1024 * 1024
        assert len(run["stream_seconds"]) == 2
    assert "open     ka        2" in result.stdout
    assert "open      2 ka-open " in result.stdout  # its wall time against the original's
