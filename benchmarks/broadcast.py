"""Broadcast benchmark: ka's chain against naive unicast and udpcast, side by side, in the lab.

Run as root from the repository (it builds virtual labs with `ka.lab.network`):

    .venv/bin/python benchmarks/broadcast.py            # every scenario, full sizes (minutes)
    .venv/bin/python benchmarks/broadcast.py --quick    # every scenario, small sizes
    .venv/bin/python benchmarks/broadcast.py --scenario slow --methods ka,udpcast --nodes 1,8
    .venv/bin/python benchmarks/broadcast.py --methods ka,original --repeat 3

Scenarios (from the project's speed goals):
  slow   100 Mbit/s links, 50 MiB of random data, N = 1, 4, 8
  gig    1 Gbit/s links, 200 MiB of random data, N = 4
  open   unshaped links, 512 MiB of random data, N = 4: MB/s, CPU and peak RSS per node
  zstd   100 Mbit/s links, 200 MiB of a tar of /usr, N = 4, ka with --compress zstd

Every run launches all its processes back to back and times each node from that moment to its
exit (process start-up and rendezvous included). A node's CPU time and peak RSS come from
wait4(2) on its process. `ka` rows also show the per-node rate ka itself reports (from the
start of the stream). With --repeat K every run is made K times and the table shows the run
of median wall time (the JSON keeps them all). Methods:
  ka       `ka send --input FILE` on the golden node, `ka receive --output FILE` on nodes,
           with a session key (authenticated and encrypted, the default of a keyed session)
  ka-open  the same without a key: the cost of security is the difference to `ka`
  original the original ka-deploy's ka-d-server and ka-d-client (benchmarks/original.py)
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ka.lab.network import LabNetwork, parse_rate
from ka.run import run, spawn

sys.path.insert(0, str(Path(__file__).parent))
import original  # noqa: E402  (benchmarks/original.py, next to this script)
from figures import MB, MIB, TCP_PAYLOAD_SHARE, RunResult, Scenario, print_table  # noqa: E402

UNICAST_PORT = 30800
UNICAST = str(Path(__file__).with_name("unicast.py"))
METHODS = ("ka", "ka-open", "original", "unicast", "udpcast")
KA_METHODS = ("ka", "ka-open")
KEY = "session.key"  # in the work directory, made once per benchmark run


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
    method: str,
    lab: LabNetwork,
    n: int,
    data: Path,
    scenario: Scenario,
    work: Path,
    run_id: str,
    original_dir: Path | None = None,
) -> list[tuple[int, str, list[str]]]:
    """(host, role, argv) in launch order."""
    nodes = range(1, n + 1)

    def output(node: int) -> str:
        # Every method writes each node's copy to tmpfs, where it is checked after the run.
        return str(work / f"{run_id}-node{node}.out")

    if method in KA_METHODS:
        ka = [sys.executable, "-m", "ka"]
        key = ["--key-file", str(work / KEY)] if method == "ka" else []
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
            *key,
        ]
        if scenario.ring_mib is not None:
            send += ["--ring-size", f"{scenario.ring_mib}MiB"]
        if scenario.compress:
            send += ["--compress", "zstd"]
        return [
            *(
                (i, f"node{i}", [*ka, "receive", "--session", run_id, "--output", output(i), *key])
                for i in nodes
            ),
            (0, "sender", send),
        ]
    if method == "original":
        assert original_dir is not None
        outputs = [output(i) for i in nodes]
        return original.commands(original_dir, lab.hosts[0].address, n, data, outputs, run_id)
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
    original_dir: Path | None = None,
) -> RunResult:
    size = data.stat().st_size
    result = RunResult(scenario.key, method, n, size, ok=False)
    bits = parse_rate(scenario.rate)
    link = bits / 8 * TCP_PAYLOAD_SHARE if bits else 50 * MB
    deadline = time.monotonic() + 60 + 4 * size * n / link
    procs: list[Process] = []
    start = time.monotonic()
    try:
        launch = commands(method, lab, n, data, scenario, work, run_id, original_dir)
        for host, role, argv in launch:
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
    if method in KA_METHODS:
        return ka_reported_seconds(report)
    if method == "original":
        return original.stream_seconds([[line for _, line in p.lines] for p in nodes])
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


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[Scenario]]:
    """The options and the scenarios they select (the methods checked, sizes and N applied)."""
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
        help=f"comma-separated: {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument("--nodes", help="comma-separated node counts, overriding the scenario's")
    parser.add_argument("--size-mib", type=int, help="stream size, overriding the scenario's")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="K", help="run everything K times (default 1)"
    )
    parser.add_argument(
        "--original",
        metavar="DIR",
        help=f"ka-d-server and ka-d-client already built (default: ${original.ENV}, else "
        "built from the original's sources into a temporary directory)",
    )
    parser.add_argument("--ring-mib", type=int, help="ka send --ring-size (default: ka's)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if unknown := set(args.methods) - set(METHODS):
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat needs at least 1")
    wanted = args.scenario.split(",")
    if unknown := set(wanted) - {s.key for s in FULL}:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    scenarios = [s for s in (QUICK if args.quick else FULL) if s.key in wanted]
    try:
        nodes = tuple(int(n) for n in args.nodes.split(",")) if args.nodes else None
    except ValueError:
        parser.error(f"--nodes takes counts separated by commas, not {args.nodes!r}")
    if nodes is not None and min(nodes) < 1:
        parser.error("--nodes: every count is at least 1")
    scenarios = [
        replace(
            s, size_mib=args.size_mib or s.size_mib, nodes=nodes or s.nodes, ring_mib=args.ring_mib
        )
        for s in scenarios
    ]
    return args, scenarios


def main(argv: Sequence[str] | None = None) -> int:
    args, scenarios = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces: run it as root")
    # `ka` runs with the key given on its command line and `ka-open` with none, whatever the
    # environment says.
    os.environ.pop("KA_KEY_FILE", None)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="ka-bench-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        run([sys.executable, "-m", "ka", "keygen", str(work / KEY)])
        original_dir = None
        if "original" in args.methods:
            try:
                original_dir = original.programs(args.original, work)
            except original.OriginalUnavailable as e:
                raise SystemExit(f"original: {e}") from None
        for rate in dict.fromkeys(s.rate for s in scenarios):
            group = [s for s in scenarios if s.rate == rate]
            with LabNetwork(max(max(s.nodes) for s in group), rate=rate) as lab:
                for scenario in group:
                    results += run_scenario(
                        scenario, args.methods, lab, work, args.repeat, original_dir
                    )
    print()
    print_table(results, scenarios)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


def run_scenario(
    scenario: Scenario,
    methods: Sequence[str],
    lab: LabNetwork,
    work: Path,
    repeat: int = 1,
    original_dir: Path | None = None,
) -> list[RunResult]:
    data = work / f"{scenario.key}.data"
    digest = make_data(scenario.data, scenario.size_mib * MIB, data)
    results = []
    for n in scenario.nodes:
        for k in range(repeat):
            for method in methods:
                run_id = f"{scenario.key}-{method}-{n}-{k}"
                print(
                    f"running {scenario.key}: {scenario.title}, {method}, N={n}, "
                    f"{scenario.size_mib} MiB, run {k + 1} of {repeat} ...",
                    file=sys.stderr,
                    flush=True,
                )
                result = run_once(
                    method, lab, n, data, digest, scenario, work, run_id, original_dir
                )
                if not result.ok:
                    print(f"  failed: {result.error}", file=sys.stderr, flush=True)
                results.append(result)
                time.sleep(0.5)  # let the last run's sockets close before the next binds
    data.unlink()
    return results


if __name__ == "__main__":
    sys.exit(main())
