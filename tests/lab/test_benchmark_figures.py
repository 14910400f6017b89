"""The benchmarks' options, tables and the original's output parsing (no lab, no root)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import broadcast  # noqa: E402
import figures  # noqa: E402
import hop  # noqa: E402
import original  # noqa: E402


def result(method: str, wall: float, n: int = 4, cpu: float = 1.0, ok: bool = True):
    return figures.RunResult(
        "gig",
        method,
        n,
        figures.GIB,
        ok,
        wall=wall,
        stream_seconds=[wall / 2] * n,
        node_cpu=[cpu] * n,
        node_rss_kib=[1024] * n,
    )


def test_options_select_scenarios_methods_sizes_and_repeats() -> None:
    args, scenarios = broadcast.parse_args(
        [
            "--scenario",
            "slow,open",
            "--methods",
            "ka,original",
            "--nodes",
            "2,3",
            "--size-mib",
            "7",
            "--repeat",
            "3",
            "--original",
            "/opt/orig",
        ]
    )
    assert [s.key for s in scenarios] == ["slow", "open"]
    assert all(s.nodes == (2, 3) and s.size_mib == 7 for s in scenarios)
    assert args.methods == ["ka", "original"]
    assert (args.repeat, args.original) == (3, "/opt/orig")
    assert all(s.ring_mib is None for s in scenarios)  # ka's own default
    _, scenarios = broadcast.parse_args(["--ring-mib", "32"])
    assert {s.ring_mib for s in scenarios} == {32}
    args, scenarios = broadcast.parse_args([])
    assert args.methods == ["ka", "ka-open", "original", "unicast", "udpcast"]
    assert [s.key for s in scenarios] == ["slow", "gig", "open", "zstd"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--methods", "ka,rsync"],
        ["--scenario", "fast"],
        ["--repeat", "0"],
        ["--nodes", "two"],
        ["--nodes", "0"],
    ],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        broadcast.parse_args(argv)
    assert exit.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_median_run_is_shown_and_ka_is_divided_by_the_original(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = [
        result("ka", 3.0, cpu=2.0),
        result("ka", 9.0, cpu=2.0),
        result("ka", 2.0, cpu=4.0),
        result("original", 2.0, cpu=1.0),
        result("original", 1.0, ok=False),
        result("ka-open", 1.0, ok=False),
    ]
    shown = figures.representative(runs)
    assert [(r.method, r.wall) for r in shown] == [("ka", 3.0), ("original", 2.0), ("ka-open", 1.0)]
    assert figures.ratio_rows(shown) == [("gig", 4, "ka", 1.5, 2.0)]
    scenario = figures.Scenario("gig", "1 Gbit/s", "1gbit", 1024, (4,))
    figures.print_table(runs, [scenario])
    out = capsys.readouterr().out
    assert "2.00-9.00" in out  # every ka run's wall time
    assert "ka-open   4  1024 FAILED" in out
    assert "gig       4 ka                  1.50       2.00" in out


def test_the_original_runs_its_server_under_the_golden_address_and_is_timed_by_its_clients(
    tmp_path: Path,
) -> None:
    launch = original.commands(tmp_path, "10.9.8.1", 2, Path("/shm/data"), ["/o1", "/o2"], "s")
    assert [(host, role) for host, role, _ in launch] == [(1, "node1"), (2, "node2"), (0, "sender")]
    assert launch[0][2] == [str(tmp_path / "ka-d-client"), "-s", "s", "-e", "cat > /o1"]
    server = launch[2][2]
    assert server[:3] == ["unshare", "--uts", "sh"]
    assert server[-1].startswith("hostname 10.9.8.1 && exec ")
    assert '-s s -n 2 -e "cat /shm/data"' in server[-1]
    lines = [
        ["Retrying...", "Elapsed time = 0.240 seconds, throughput = 79.629 Mbytes/second"],
        ["Elapsed time = 1.5 seconds, throughput = 1 Mbytes/second"],
        ["killed"],
    ]
    assert original.stream_seconds(lines) == [0.24, 1.5]


def test_the_original_is_refused_where_its_programs_are_missing(tmp_path: Path) -> None:
    with pytest.raises(original.OriginalUnavailable, match="ka-d-server"):
        original.programs(str(tmp_path), tmp_path)


def test_hop_options_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = hop.parse_args(["--size-mib", "64", "--modes", "keyed", "--ring-mib", "16"])
    assert (args.size_mib, args.modes, args.repeat, args.ring_mib) == (64, ["keyed"], 1, 16)
    with pytest.raises(SystemExit):
        hop.parse_args(["--modes", "fast"])
    hop.print_table([hop.HopResult("keyed", hop.GIB, 0.5, 1.0, 2.0, 3.0, 2048, 4096)])
    out = capsys.readouterr().out
    assert (
        "keyed    1024     0.50   2.15    1.00           2.00           3.00       2M       4M"
        in out
    )
