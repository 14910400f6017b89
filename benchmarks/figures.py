"""The broadcast benchmark's results and its tables (no I/O but print: tested without a lab)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ka.lab.network import parse_rate

MIB = 1 << 20
GIB = 1 << 30
MB = 1_000_000
# TCP payload per byte that tbf counts: 1448 payload bytes (1500 MTU less IP, TCP and timestamp
# headers) per 1514-byte Ethernet frame. At 100 Mbit/s that is 11.95 MB/s.
TCP_PAYLOAD_SHARE = 1448 / 1514
BASELINE = "original"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    rate: str | None
    size_mib: int
    nodes: tuple[int, ...]
    data: str = "random"  # "random" | "usr-tar"
    compress: bool = False
    ring_mib: int | None = None  # ka send --ring-size (None: ka's default)


@dataclass
class RunResult:
    scenario: str
    method: str
    nodes: int
    size: int
    ok: bool
    wall: float = 0.0  # launch of the first process to exit of the last node
    stream_seconds: list[float] = field(default_factory=list)  # per node, from stream start
    node_cpu: list[float] = field(default_factory=list)
    node_rss_kib: list[int] = field(default_factory=list)
    sender_cpu: float = 0.0
    sender_rss_kib: int = 0
    error: str = ""

    @property
    def stream_wall(self) -> float:
        return max(self.stream_seconds, default=0.0)

    @property
    def cpu_per_gib(self) -> float:
        return max(self.node_cpu, default=0.0) / (self.size / GIB)


def link_payload_rate(rate: str | None) -> float | None:
    bits = parse_rate(rate)
    return bits / 8 * TCP_PAYLOAD_SHARE if bits else None


def representative(results: Sequence[RunResult]) -> list[RunResult]:
    """One run per (scenario, method, N), in first-run order: the run of median wall time
    among the successful ones (the lower median of an even count), else the first failure."""
    groups: dict[tuple[str, str, int], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.scenario, r.method, r.nodes), []).append(r)
    chosen = []
    for runs in groups.values():
        ok = sorted((r for r in runs if r.ok), key=lambda r: r.wall)
        chosen.append(ok[(len(ok) - 1) // 2] if ok else runs[0])
    return chosen


def wall_range(results: Sequence[RunResult], r: RunResult) -> str:
    walls = [
        b.wall
        for b in results
        if (b.scenario, b.method, b.nodes) == (r.scenario, r.method, r.nodes) and b.ok
    ]
    return f"{min(walls):.2f}-{max(walls):.2f}" if len(walls) > 1 else "-"


def print_table(results: Sequence[RunResult], scenarios: Sequence[Scenario]) -> None:
    """Every (scenario, method, N) once (its median run when repeated), then the ratios."""
    by_key = {s.key: s for s in scenarios}
    shown = representative(results)
    head = (
        f"{'scenario':<8} {'method':<8} {'N':>2} {'MiB':>5} {'wall s':>7} {'range':>11} "
        f"{'stream s':>8} {'node MB/s':>15} {'% link':>7} {'T/T(1)':>6} {'CPU s/GiB':>9} "
        f"{'RSS MiB':>7} {'snd CPU':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in shown:
        link = link_payload_rate(by_key[r.scenario].rate)
        if not r.ok:
            print(
                f"{r.scenario:<8} {r.method:<8} {r.nodes:>2} {r.size / MIB:>5.0f} FAILED: {r.error}"
            )
            continue
        rates = [r.size / s / MB for s in r.stream_seconds]
        pct = f"{100 * min(rates) / (link / MB):6.1f}%" if link else "      -"
        base = next(
            (
                b
                for b in shown
                if b.scenario == r.scenario and b.method == r.method and b.nodes == 1 and b.ok
            ),
            None,
        )
        ratio = f"{r.stream_wall / base.stream_wall:6.2f}" if base else "     -"
        rss = max(r.node_rss_kib) / 1024
        print(
            f"{r.scenario:<8} {r.method:<8} {r.nodes:>2} {r.size / MIB:>5.0f} {r.wall:7.2f} "
            f"{wall_range(results, r):>11} {r.stream_wall:8.2f} "
            f"{min(rates):6.1f}..{max(rates):<7.1f} {pct} {ratio} "
            f"{r.cpu_per_gib:9.2f} {rss:7.0f} {r.sender_cpu:7.2f}"
        )
    print()
    print(
        "wall s: launch of all processes to the last node's exit (start-up and rendezvous\n"
        "included), the median run's; range: every run's, with --repeat; stream s and node\n"
        "MB/s: from the start of the stream to each node having it all (ka: as ka reports it;\n"
        "original: as ka-d-client reports it; udpcast: from 'Starting transfer' to 'Transfer\n"
        "complete'; unicast: from the first accepted connection), 1 MB = 10^6 bytes, MB/s as\n"
        "payload (uncompressed) bytes; % link: slowest node against the link's TCP payload rate\n"
        f"({100 * TCP_PAYLOAD_SHARE:.1f} % of the nominal rate); T/T(1): slowest node's stream\n"
        "time against N=1; CPU s/GiB and RSS (peak VmHWM): the worst node (the original's node\n"
        "CPU includes its consumer, `cat > FILE`); snd CPU: sender's CPU seconds."
    )
    ratios = ratio_rows(shown)
    if ratios:
        print()
        print(f"{'scenario':<8} {'N':>2} {'method':<8} {'wall / original':>15} {'CPU / orig':>10}")
        for scenario, n, method, wall, cpu in ratios:
            print(f"{scenario:<8} {n:>2} {method:<8} {wall:15.2f} {cpu:10.2f}")


def ratio_rows(shown: Sequence[RunResult]) -> list[tuple[str, int, str, float, float]]:
    """(scenario, N, method, wall / original's, node CPU per GiB / original's) for every
    successful run of a ka method that has a successful original beside it."""
    base = {(r.scenario, r.nodes): r for r in shown if r.method == BASELINE and r.ok}
    rows = []
    for r in shown:
        b = base.get((r.scenario, r.nodes))
        if r.method.startswith("ka") and r.ok and b is not None and b.wall and b.cpu_per_gib:
            rows.append(
                (r.scenario, r.nodes, r.method, r.wall / b.wall, r.cpu_per_gib / b.cpu_per_gib)
            )
    return rows

