"""The broadcast benchmark's harness runs end to end on a tiny stream (figures not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]  # the harness itself: 300 s

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "broadcast.py"
# The original ka-deploy is never part of ka: its C sources sit beside the checkout
# (../shared/reference/ka-deploy-src, as benchmarks/original.py looks for them), or $KA_ORIGINAL
# names its binaries.
ORIGINAL_SOURCES = BENCHMARK.parents[2] / "shared" / "reference" / "ka-deploy-src"


def _run(tmp_path: Path, methods: str) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--scenario", "open", "--nodes", "2",
         "--size-mib", "2", "--methods", methods, "--json", str(figures)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(figures.read_text())
    for run in runs:
        assert run["ok"], run["error"]
        assert run["size"] == 2 * 1024 * 1024
        assert len(run["stream_seconds"]) == 2
    return result, runs


def test_every_method_of_ka_and_its_peers_delivers_a_verified_copy(tmp_path: Path) -> None:
    result, runs = _run(tmp_path, "ka,ka-open,unicast,udpcast")
    assert sorted(r["method"] for r in runs) == ["ka", "ka-open", "udpcast", "unicast"]
    assert "open     ka        2" in result.stdout


@pytest.mark.skipif(not ORIGINAL_SOURCES.is_dir() and not os.environ.get("KA_ORIGINAL"),
                    reason=f"the original ka-deploy's sources are not at {ORIGINAL_SOURCES} "
                    "and $KA_ORIGINAL is not set")
def test_the_original_runs_beside_ka_and_its_ratio_is_printed(tmp_path: Path) -> None:
    # the original built from its sources (gcc-multilib), beside ka with and without a key
    result, runs = _run(tmp_path, "ka,ka-open,original")
    assert sorted(r["method"] for r in runs) == ["ka", "ka-open", "original"]
    assert "open      2 ka-open " in result.stdout  # its wall time against the original's


