"""Broadcast benchmark: ka's chain against naive unicast and udpcast, side by side, in the lab.

Run as root from the repository (it builds virtual labs with `ka.lab.network`):

    .venv/bin/python benchmarks/broadcast.py            # every scenario, full sizes (minutes)
    .venv/bin/python benchmarks/broadcast.py --quick    # every scenario, small sizes
    .venv/bin/python benchmarks/broadcast.py --scenario slow --methods ka,udpcast --nodes 1,8

Scenarios (from the project's speed goals):
  slow   100 Mbit/s links, 50 MiB of random data, N = 1, 4, 8
  gig    1 Gbit/s links, 200 MiB of random data, N = 4
  open   unshaped links, 512 MiB of random data, N = 4: MB/s, CPU and peak RSS per node
  zstd   100 Mbit/s links, 200 MiB of a tar of /usr, N = 4, ka with --compress zstd

Every run launches all its processes back to back and times each node from that moment to its
exit (process start-up and rendezvous included). A node's CPU time and peak RSS come from
wait4(2) on its process. `ka` rows also show the per-node rate ka itself reports (from the
start of the stream). Methods:
  ka       `ka send --input FILE` on the golden node, `ka receive --output /dev/null` on nodes
  unicast  the golden node serves each node its own TCP stream (benchmarks/unicast.py)
  udpcast  udp-sender/udp-receiver (Debian's udpcast), on each namespace's eth0 only; capped
           with --max-bitrate at 95 % of a shaped link (without a cap it floods the token
           bucket and loses time to retransmissions)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ka.lab.network import LabNetwork, parse_rate
from ka.run import spawn

MIB = 1 << 20
GIB = 1 << 30
MB = 1_000_000
# TCP payload per byte that tbf counts: 1448 payload bytes (1500 MTU less IP, TCP and timestamp
# headers) per 1514-byte Ethernet frame. At 100 Mbit/s that is 11.95 MB/s.
TCP_PAYLOAD_SHARE = 1448 / 1514
UNICAST_PORT = 30800
UNICAST = str(Path(__file__).with_name("unicast.py"))
METHODS = ("ka", "unicast", "udpcast")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    rate: str | None
    size_mib: int
    nodes: tuple[int, ...]
    data: str = "random"  # "random" | "usr-tar"
    compress: bool = False


FULL = (
    Scenario("slow", "100 Mbit/s, random data", "100mbit", 50, (1, 4, 8)),
    Scenario("gig", "1 Gbit/s, random data", "1gbit", 200, (4,)),
    Scenario("open", "unshaped, random data", None, 512, (4,)),
    Scenario(
        "zstd",
        "100 Mbit/s, tar of /usr, ka --compress zstd",
        "100mbit",
        200,
        (4,),
        data="usr-tar",
        compress=True,
    ),
)
QUICK = (
    Scenario("slow", "100 Mbit/s, random data", "100mbit", 10, (1, 4)),
    Scenario("gig", "1 Gbit/s, random data", "1gbit", 50, (4,)),
    Scenario("open", "unshaped, random data", None, 100, (4,)),
    Scenario(
        "zstd",
        "100 Mbit/s, tar of /usr, ka --compress zstd",
        "100mbit",
        30,
        (2,),
        data="usr-tar",
        compress=True,
    ),
)


@dataclass
class Process:
    role: str  # "sender" | "node1" | "node2" ...
    popen: subprocess.Popen[bytes]
    lines: list[tuple[float, str]] = field(default_factory=list)  # (when, output line)
    reader: threading.Thread | None = None
    end: float | None = None
    cpu: float = 0.0
    peak_rss_kib: int = 0
    status: int | None = None

    def read_output(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def when(self, text: str) -> float | None:
        """When the process first printed a line containing `text`."""
        return next((t for t, line in self.lines if text in line), None)

    def sample_rss(self) -> None:
        # VmHWM, not wait4's ru_maxrss: a forked child inherits its parent's high-water
        # mark in ru_maxrss, which would report the benchmark's own size for every node.
        try:
            status = Path(f"/proc/{self.popen.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))


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


def make_data(kind: str, size: int, path: Path) -> str:
    """Write `size` bytes of test data to `path`; returns its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        if kind == "random":
            left = size
            while left:
                block = os.urandom(min(left, 4 * MIB))
                out.write(block)
                digest.update(block)
                left -= len(block)
        else:
            tar = spawn(
                ["tar", "-cf", "-", "-C", "/", "usr"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert tar.stdout is not None
            left = size
            while left and (block := tar.stdout.read(min(left, 4 * MIB))):
                out.write(block)
                digest.update(block)
                left -= len(block)
            tar.kill()  # it was only needed for its first `size` bytes
            tar.wait()
            if left:
                raise SystemExit(f"a tar of /usr has fewer than {size} bytes")
    return digest.hexdigest()


def commands(
    method: str, lab: LabNetwork, n: int, data: Path, scenario: Scenario, work: Path, run_id: str
) -> list[tuple[int, str, list[str]]]:
    """(host, role, argv) in launch order."""
    ka = [sys.executable, "-m", "ka"]
    nodes = range(1, n + 1)

    def output(node: int) -> str:
        # Every method writes each node's copy to tmpfs, where it is checked after the run.
        return str(work / f"{run_id}-node{node}.out")

    if method == "ka":
        send = [
            *ka,
            "send",
            "--nodes",
            str(n),
            "--session",
            run_id,
            "--input",
            str(data),
            "--report",
            str(work / f"{run_id}.json"),
        ]
        if scenario.compress:
            send += ["--compress", "zstd"]
        return [
            *(
                (i, f"node{i}", [*ka, "receive", "--session", run_id, "--output", output(i)])
                for i in nodes
            ),
            (0, "sender", send),
        ]
    if method == "unicast":
        serve = [sys.executable, UNICAST, "serve", str(data), str(UNICAST_PORT), str(n)]
        fetch = [sys.executable, UNICAST, "fetch", lab.hosts[0].address, str(UNICAST_PORT)]
        return [(0, "sender", serve), *((i, f"node{i}", [*fetch, output(i)]) for i in nodes)]
    if method == "udpcast":
        common = ["--interface", "eth0", "--nokbd", "--no-progress"]
        send = [
            "udp-sender",
            *common,
            "--file",
            str(data),
            "--min-receivers",
            str(n),
            "--full-duplex",
        ]
        bits = parse_rate(scenario.rate)
        if bits is not None:
            send += ["--max-bitrate", f"{bits * 95 // 100 // 1000}k"]
        return [
            *(
                (
                    i,
                    f"node{i}",
                    [
                        "udp-receiver",
                        *common,
                        "--nosync",
                        "--file",
                        output(i),
                    ],
                )
                for i in nodes
            ),
            (0, "sender", send),
        ]
    raise ValueError(method)


def reap(procs: Sequence[Process], deadline: float) -> None:
    """Wait for every process, noting its end, CPU time and peak RSS; kill what outlives
    `deadline` (only these processes, which this run started)."""
    while any(p.status is None for p in procs):
        for p in procs:
            if p.status is not None:
                continue
            p.sample_rss()
            pid, status, usage = os.wait4(p.popen.pid, os.WNOHANG)
            if pid:
                p.end = time.monotonic()
                p.status = os.waitstatus_to_exitcode(status)
                p.popen.returncode = p.status
                p.cpu = usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            for p in procs:
                if p.status is None:
                    p.popen.send_signal(signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.005)
    for p in procs:
        if p.reader is not None:
            p.reader.join(timeout=10)


def run_once(
    method: str,
    lab: LabNetwork,
    n: int,
    data: Path,
    digest: str,
    scenario: Scenario,
    work: Path,
    run_id: str,
) -> RunResult:
    size = data.stat().st_size
    result = RunResult(scenario.key, method, n, size, ok=False)
    bits = parse_rate(scenario.rate)
    link = bits / 8 * TCP_PAYLOAD_SHARE if bits else 50 * MB
    deadline = time.monotonic() + 60 + 4 * size * n / link
    procs: list[Process] = []
    start = time.monotonic()
    try:
        for host, role, argv in commands(method, lab, n, data, scenario, work, run_id):
            popen = lab.spawn(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            proc = Process(role, popen)
            proc.reader = threading.Thread(target=proc.read_output, daemon=True)
            proc.reader.start()
            procs.append(proc)
        reap(procs, deadline)
    finally:
        for p in procs:
            if p.status is None:
                p.popen.kill()
                p.popen.wait()
    sender = next(p for p in procs if p.role == "sender")
    nodes = [p for p in procs if p.role != "sender"]
    (work / f"{run_id}.log").write_text(
        "".join(f"{t - start:8.3f} {p.role}: {line}\n" for p in procs for t, line in p.lines)
    )
    result.wall = max((p.end or start) - start for p in nodes)
    result.sender_cpu, result.sender_rss_kib = sender.cpu, sender.peak_rss_kib
    result.node_cpu = [p.cpu for p in nodes]
    result.node_rss_kib = [p.peak_rss_kib for p in nodes]
    checked = verify(nodes, digest, work, run_id)
    failed = [p for p in procs if p.status != 0]
    if failed:
        tail = [line for _, line in failed[0].lines[-3:]]
        result.error = f"{failed[0].role} exited {failed[0].status}: {' | '.join(tail)}"
        return result
    result.error = checked
    result.stream_seconds = stream_seconds(method, sender, nodes, work / f"{run_id}.json")
    if not result.error and len(result.stream_seconds) != n:
        result.error = "could not time the stream on every node"
    result.ok = not result.error
    return result


def stream_seconds(
    method: str, sender: Process, nodes: Sequence[Process], report: Path
) -> list[float]:
    """Per node, the time from the start of the stream to the node having it all."""
    if method == "ka":
        return ka_reported_seconds(report)
    if method == "unicast":
        start, done = sender.when("start"), [p.lines[-1][0] if p.lines else None for p in nodes]
    else:
        start, done = sender.when("Starting transfer"), [p.when("Transfer complete") for p in nodes]
    if start is None or None in done:
        return []
    return [d - start for d in done if d is not None]


def verify(nodes: Sequence[Process], digest: str, work: Path, run_id: str) -> str:
    """What is wrong with the copies the nodes wrote, or ''; removes them."""
    error = ""
    for p in nodes:
        out = work / f"{run_id}-{p.role}.out"
        h = hashlib.sha256()
        try:
            with out.open("rb") as f:
                while block := f.read(4 * MIB):
                    h.update(block)
        except FileNotFoundError:
            error = error or f"{p.role} wrote nothing"
            continue
        out.unlink()
        if h.hexdigest() != digest:
            error = error or f"{p.role} received different data"
    return error


def ka_reported_seconds(path: Path) -> list[float]:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [float(node["seconds"]) for node in report.get("nodes", []) if node.get("seconds")]


def link_payload_rate(rate: str | None) -> float | None:
    bits = parse_rate(rate)
    return bits / 8 * TCP_PAYLOAD_SHARE if bits else None


def print_table(results: Sequence[RunResult], scenarios: Sequence[Scenario]) -> None:
    by_key = {s.key: s for s in scenarios}
    head = (
        f"{'scenario':<8} {'method':<8} {'N':>2} {'MiB':>5} {'wall s':>7} {'stream s':>8} "
        f"{'node MB/s':>15} {'% link':>7} {'T/T(1)':>6} {'CPU s/GiB':>9} {'RSS MiB':>7} "
        f"{'snd CPU':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        scenario = by_key[r.scenario]
        link = link_payload_rate(scenario.rate)
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
                for b in results
                if b.scenario == r.scenario and b.method == r.method and b.nodes == 1 and b.ok
            ),
            None,
        )
        ratio = f"{r.stream_wall / base.stream_wall:6.2f}" if base else "     -"
        cpu = max(r.node_cpu) / (r.size / GIB)
        rss = max(r.node_rss_kib) / 1024
        print(
            f"{r.scenario:<8} {r.method:<8} {r.nodes:>2} {r.size / MIB:>5.0f} {r.wall:7.2f} "
            f"{r.stream_wall:8.2f} {min(rates):6.1f}..{max(rates):<7.1f} {pct} {ratio} "
            f"{cpu:9.2f} {rss:7.0f} {r.sender_cpu:7.2f}"
        )
    print()
    print(
        "wall s: launch of all processes to the last node's exit (start-up and rendezvous\n"
        "included); stream s and node MB/s: from the start of the stream to each node having\n"
        "it all (ka: as ka reports it; udpcast: from 'Starting transfer' to 'Transfer\n"
        "complete'; unicast: from the first accepted connection), 1 MB = 10^6 bytes, MB/s as\n"
        "payload (uncompressed) bytes; % link: slowest node against the link's TCP payload rate\n"
        f"({100 * TCP_PAYLOAD_SHARE:.1f} % of the nominal rate); T/T(1): slowest node's stream\n"
        "time against N=1; CPU s/GiB and RSS (peak VmHWM): the worst node; snd CPU: sender's\n"
        "CPU seconds."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer nodes")
    parser.add_argument(
        "--scenario",
        default="slow,gig,open,zstd",
        help="comma-separated: slow, gig, open, zstd (default: all)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated: ka, unicast, udpcast (default: all)",
    )
    parser.add_argument("--nodes", help="comma-separated node counts, overriding the scenario's")
    parser.add_argument("--size-mib", type=int, help="stream size, overriding the scenario's")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the benchmark builds network namespaces: run it as root")
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    wanted = args.scenario.split(",")
    scenarios = [s for s in (QUICK if args.quick else FULL) if s.key in wanted]
    if args.nodes or args.size_mib:
        scenarios = [
            Scenario(
                s.key,
                s.title,
                s.rate,
                args.size_mib or s.size_mib,
                tuple(int(n) for n in args.nodes.split(",")) if args.nodes else s.nodes,
                s.data,
                s.compress,
            )
            for s in scenarios
        ]
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="ka-bench-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        for rate in dict.fromkeys(s.rate for s in scenarios):
            group = [s for s in scenarios if s.rate == rate]
            with LabNetwork(max(max(s.nodes) for s in group), rate=rate) as lab:
                for scenario in group:
                    results += run_scenario(scenario, methods, lab, work)
    print()
    print_table(results, scenarios)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


def run_scenario(
    scenario: Scenario, methods: Sequence[str], lab: LabNetwork, work: Path
) -> list[RunResult]:
    data = work / f"{scenario.key}.data"
    digest = make_data(scenario.data, scenario.size_mib * MIB, data)
    results = []
    for n in scenario.nodes:
        for method in methods:
            run_id = f"{scenario.key}-{method}-{n}"
            print(
                f"running {scenario.key}: {scenario.title}, {method}, N={n}, "
                f"{scenario.size_mib} MiB ...",
                file=sys.stderr,
                flush=True,
            )
            result = run_once(method, lab, n, data, digest, scenario, work, run_id)
            if not result.ok:
                print(f"  failed: {result.error}", file=sys.stderr, flush=True)
            results.append(result)
            time.sleep(0.5)  # let the last run's sockets close before the next binds
    data.unlink()
    return results


if __name__ == "__main__":
    sys.exit(main())
