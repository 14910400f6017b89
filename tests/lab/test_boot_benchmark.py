"""benchmarks/boot.py: its options and table (no lab, no root), and one run of the harness
with two nodes in the lab that checks every node's copy of every boot file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import boot  # noqa: E402

BENCHMARK = Path(boot.__file__)


def test_defaults_are_the_issue_figures_and_quick_is_small() -> None:
    args = boot.parse_args([])
    assert (args.nodes, args.rate, args.methods, args.json) == (
        [1, 8, 32], "100mbit", ["single", "stage2"], None)
    assert boot.parse_args(["--quick"]).nodes == [1, 2]
    args = boot.parse_args(["--quick", "--nodes", "8,2,8", "--rate", "1gbit", "--methods",
                            "stage2", "--json", "f.json"])
    assert (args.nodes, args.rate, args.methods, args.json) == ([2, 8], "1gbit", ["stage2"],
                                                               "f.json")


@pytest.mark.parametrize(("argv", "said"), [
    (["--nodes", "1,x"], "comma-separated numbers"),
    (["--nodes", "0,4"], "at least 1"),
    (["--methods", "single,pxe"], "unknown pxe"),
    (["--kernel", "/boot/vmlinuz"], "--kernel and --modules go together"),
])
def test_bad_options_are_refused(argv: list[str], said: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        boot.parse_args(argv)
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err


def test_an_unknown_rate_is_refused_before_anything_is_built() -> None:
    from ka.errors import UsageError

    with pytest.raises(UsageError, match="unknown link rate"):
        boot.parse_args(["--rate", "fast"])


def run(method: str, n: int, total: float, chain: float | None = None,
        stream: float | None = None, exact: bool = True) -> boot.Run:
    return boot.Run(method, n, "100mbit", total=total, tftp=total - (chain or 0.0),
                    chain=chain, stream=stream, golden_bytes=n * 36_000_000,
                    node_cpu_per_gib=None if chain is None else 16.25, load=(3.04, 5.5),
                    exact=exact)


def test_the_table_has_a_row_per_run_and_the_chain_ratios() -> None:
    runs = [run("single", 1, 3.3), run("stage2", 1, 4.0, 2.0, 1.5),
            run("single", 8, 30.0, exact=False), run("stage2", 8, 14.0, 3.0, 1.8),
            run("stage2", 32, 50.0, 4.0, 1.6)]
    lines = boot.table(runs).splitlines()
    assert lines[0].split() == ["method", "N", "total", "s", "TFTP", "s", "chain", "s",
                                "stream", "s", "golden", "MB", "CPU", "s/GiB", "load", "copies"]
    assert lines[1].split() == ["single", "1", "3.3", "3.3", "-", "-", "36.0", "-", "3.0-5.5",
                                "exact"]
    assert lines[2].split() == ["stage2", "1", "4.0", "2.0", "2.0", "1.50", "36.0", "16.25",
                                "3.0-5.5", "exact"]
    assert lines[3].split()[-1] == "DIFFER"
    assert lines[6] == "chain T(8)/T(1): stream 1.200, wall 1.500  (goal <= 1.1: NOT met)"
    assert lines[7] == "chain T(32)/T(1): stream 1.067, wall 2.000  (goal <= 1.1: met)"
    assert len(lines) == 8
    assert boot.chain_ratios(runs)[1] == (1.0, 1.0)


def test_a_chain_slowed_by_the_nodes_cpu_says_so() -> None:
    # 18.3 MB of stage2 take 1.6 s at 100 Mbit/s; 32 nodes of about 0.45 CPU s, 7.3 s on 2 cores.
    busy = boot.Run("stage2", 32, "100mbit", chain=20.0, stream=9.0, chain_bytes=18_259_061,
                    node_cpu=[0.45] * 30 + [0.5, 0.6], cores=2)
    assert boot.cpu_bound(busy) == ("stage2, N=32: CPU-bound: the nodes' ka receive used 14.6 "
                                    "CPU s (0.60 s the busiest), 7.3 s on 2 cores, against 1.6 "
                                    "s of link time for stage2")
    assert boot.table([busy]).splitlines()[-1] == boot.cpu_bound(busy)
    quiet = boot.Run("stage2", 1, "100mbit", chain=3.0, stream=1.7, chain_bytes=18_259_061,
                     node_cpu=[0.3], cores=2)
    assert boot.cpu_bound(quiet) is None
    assert boot.cpu_bound(boot.Run("single", 8, "100mbit", cores=2)) is None


def test_a_failed_run_has_no_total_and_says_why() -> None:
    failed = boot.Run("stage2", 32, "100mbit", total=44.0, tftp=44.0, cores=2,
                      error="stage2: 30 of 32 node(s) failed: 30 x ka: error: evicted")
    lines = boot.table([run("stage2", 1, 4.0, 2.0, 1.5), failed]).splitlines()
    assert lines[2].split()[:4] == ["stage2", "32", "-", "44.0"]
    assert lines[2].split()[-1] == "FAILED"
    assert lines[-1] == "stage2, N=32: stage2: 30 of 32 node(s) failed: 30 x ka: error: evicted"
    assert list(boot.chain_ratios([run("stage2", 1, 4.0, 2.0, 1.5), failed])) == [1]


def test_no_ratio_without_a_single_node_chain() -> None:
    runs = [run("single", 1, 3.3), run("stage2", 8, 14.0, 3.0, 1.8)]
    assert boot.chain_ratios(runs) == {}
    assert len(boot.table(runs).splitlines()) == 3


@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_nodes_get_exact_copies_and_stage2_leaves_the_golden_once(tmp_path: Path) -> None:
    figures = tmp_path / "boot.json"
    result = subprocess.run([sys.executable, str(BENCHMARK), "--quick", "--nodes", "2",
                             "--json", str(figures)],
                            capture_output=True, text=True, timeout=540, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r["method"]: r for r in json.loads(figures.read_text())["runs"]}
    assert set(runs) == {"single", "stage2"}
    assert set(runs["single"]["built"]) == {"vmlinuz", "initrd.img"}
    assert set(runs["stage2"]["built"]) == {"vmlinuz", "initrd.img", "stage2"}
    for r in runs.values():
        assert sorted(r["copies"]) == ["node1", "node2"]
        for node, copies in r["copies"].items():
            assert copies == r["built"], f"{r['method']}: {node}'s copy differs"
        # What the golden's eth0 sent: TFTP once per node, stage2 once whatever N (a chain),
        # with a few per cent of headers on top.
        payload = 2 * r["tftp_bytes"] + r["chain_bytes"]
        assert payload <= r["golden_bytes"] < 1.1 * payload, r
    assert runs["single"]["chain"] is None and runs["stage2"]["chain"] > 0
    assert runs["stage2"]["chain_bytes"] > 0 and runs["single"]["chain_bytes"] == 0
    assert len(runs["stage2"]["node_cpu"]) == 2 and all(c > 0 for c in runs["stage2"]["node_cpu"])
    # The stream's share of each node's CPU, measured from the session's start on.
    during, total = runs["stage2"]["stream_cpu"], runs["stage2"]["node_cpu"]
    assert len(during) == 2 and all(0 < d <= c for d, c in zip(during, total, strict=True))
    assert "stage2     2" in result.stdout and "single     2" in result.stdout


def test_stream_cpu_is_split_at_the_start() -> None:
    run = boot.Run("stage2", 2, "100mbit", node_cpu=[0.5, 0.7], stream_cpu=[0.3, 0.4], cores=2)
    assert boot.stream_cpu(run) == ("stage2, N=2: ka receive CPU per node: 0.25 s before the "
                                    "stream, 0.35 s during it (the busiest 0.40 s; 0.7 s for all)")
    assert boot.stream_cpu(boot.Run("stage2", 2, "100mbit", node_cpu=[0.5, 0.7])) is None
    assert boot.stream_cpu(run) in boot.table([run]).splitlines()
