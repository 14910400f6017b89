"""A long chain in the lab: T(N)/T(1) with a node killed in the middle of the chain.

Run as root from the repository (it builds a virtual lab with `ka.lab.network`):

    .venv/bin/python benchmarks/chain.py                        # 32 nodes, 10 Mbit/s, 20 MiB
    .venv/bin/python benchmarks/chain.py --chunk-size 256K      # a fixed chunk instead
    .venv/bin/python benchmarks/chain.py --nodes 8 --rate 100mbit --size-mib 50 --no-kill

One lab of N nodes (`ka lab up --nodes N --rate RATE`). First `ka send` to node1 alone, then to
all N nodes, every node's consumer `sha256sum`; in the second run the node at position N/2 is
SIGKILLed once it holds a third of the stream. Printed: T(1) and T(N), from the producer's
start to the last node's end as `ka send` reports it, their ratio, every node's digest, the
killed node's state in the report, and each node's CPU seconds per GiB during the session
(the node's process and its consumer, process start-up left out). With --json FILE, also the
figures as JSON.

What bounds T(N)/T(1): every hop stores and checks a whole chunk before passing it on, so the
last node starts (N - 1) chunk-times after the first: T(N)/T(1) is about
1 + (N - 1) * chunk / size. At 20 MiB and 32 nodes that is 1.38 with 256 KiB chunks, 1.05
with 32 KiB ones; ka send's own choice (ka.transport.chunking) is 32 KiB there. A
killed node costs its son the time to notice and re-attach.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ka.lab.network import LabNetwork, parse_rate
from ka.sizes import parse_size
from ka.transport.chunking import ChunkSizer

MIB = 1 << 20
GIB = 1 << 30
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    nodes: int
    seconds: float = 0.0  # producer start to the last node's end, as ka send reports it
    ok_nodes: list[str] = field(default_factory=list)  # right sha256, exit 0, "ok" in report
    bad_nodes: list[str] = field(default_factory=list)
    killed: str | None = None
    killed_state: str | None = None  # its state in ka send's report
    cpu_per_gib: dict[str, float] = field(default_factory=dict)  # node -> CPU s/GiB
    sender_cpu: float = 0.0
    error: str = ""


class Proc:
    """One process of the run, its output in a file; CPU read from /proc and wait4."""

    def __init__(self, lab: LabNetwork, host: int, argv: list[str], out: Path) -> None:
        with out.open("wb") as sink:
            self.popen = lab.spawn(host, argv, stdout=sink, stderr=subprocess.STDOUT)
        self.out = out
        self.cpu_at_start: float | None = None
        self.cpu = 0.0
        self.status: int | None = None

    def cpu_now(self) -> float:
        """CPU seconds so far, of the process and of its children it has waited for."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return self.cpu
        return sum(int(x) for x in fields[11:15]) / TICKS  # utime stime cutime cstime

    def reap(self) -> bool:
        if self.status is None:
            pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                self.popen.returncode = self.status
                self.cpu = usage.ru_utime + usage.ru_stime  # with its reaped consumer
        return self.status is not None

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


def run(lab: LabNetwork, n: int, data: Path, digest: str, args: argparse.Namespace,
        work: Path, kill: bool) -> Run:
    result = Run(n)
    session = f"chain{n}"
    ka = [sys.executable, "-m", "ka"]
    report = work / f"{session}.json"
    sender = Proc(lab, 0, [*ka, "send", "--nodes", str(n), "--session", session, "--json",
                           "--input", str(data), "--report", str(report),
                           *(["--chunk-size", args.chunk_size] if args.chunk_size else [])],
                  work / f"{session}-sender.out")
    nodes = {f"node{i}": Proc(lab, i, [*ka, "receive", "--session", session, "--name",
                                       f"node{i}", "--command",
                                       f"sha256sum > {work / f'{session}-node{i}.sha'}"],
                              work / f"{session}-node{i}.out")
             for i in range(1, n + 1)}
    victim = f"node{n // 2}" if kill and n > 2 else None
    size = data.stat().st_size
    link = (parse_rate(args.rate) or 800_000_000) / 8
    deadline = time.monotonic() + 60 + 3 * size / link
    started = False
    procs = [sender, *nodes.values()]
    try:
        while not all(p.reap() for p in procs):
            if time.monotonic() > deadline:
                result.error = "timed out"
                break
            events = sender.events()
            if not started and any(e.get("event") == "start" for e in events):
                started = True
                for p in nodes.values():
                    p.cpu_at_start = p.cpu_now()
            if victim and result.killed is None and _holds(events, victim) >= size // 3:
                nodes[victim].popen.send_signal(signal.SIGKILL)
                result.killed = victim
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.status is None:
                p.popen.kill()
                p.popen.wait()
    result.sender_cpu = sender.cpu
    try:
        summary = json.loads(report.read_text())
    except (OSError, ValueError):
        result.error = result.error or f"no report: {sender.out.read_text()[-500:]}"
        return result
    result.seconds = float(summary["seconds"]) + float(summary["drain_seconds"])
    states = {r["name"]: r["state"] for r in summary["nodes"]}
    for name, p in nodes.items():
        if name == result.killed:
            result.killed_state = states.get(name)
            continue
        sha = work / f"{session}-{name}.sha"
        got = sha.read_text().split()[0] if sha.exists() and sha.stat().st_size else ""
        good = got == digest and p.status == 0 and states.get(name) == "ok"
        (result.ok_nodes if good else result.bad_nodes).append(name)
        if not good:
            said = [str(e.get("message")) for e in sender.events()
                    if e.get("node") == next((r["node"] for r in summary["nodes"]
                                              if r["name"] == name), None)]
            result.error = result.error or (
                f"{name}: exit {p.status}, {states.get(name)} in the report; the sender said: "
                f"{' | '.join(said[-3:])}; it said: {p.out.read_text()[-300:]!r}")
        if p.cpu_at_start is not None:
            result.cpu_per_gib[name] = round((p.cpu - p.cpu_at_start) / (size / GIB), 2)
    return result


def _holds(events: Sequence[dict[str, object]], name: str) -> int:
    """The bytes `name` holds by the sender's latest progress event."""
    for e in reversed(events):
        if e.get("event") == "progress":
            rows = e.get("nodes")
            assert isinstance(rows, list)
            return next((int(r["bytes"]) for r in rows if r.get("name") == name), 0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--rate", default="10mbit", help="link rate of every port")
    parser.add_argument("--size-mib", type=int, default=20)
    parser.add_argument("--chunk-size", help="ka send --chunk-size (default: ka send's own choice)")
    parser.add_argument("--no-kill", action="store_true", help="kill no node")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="write every process's output and report here, and keep them")
    args = parser.parse_args(argv)
    chunk = parse_size(args.chunk_size) if args.chunk_size else ChunkSizer(
        args.nodes, args.size_mib * MIB).next(0)
    if os.geteuid() != 0:
        parser.error("the benchmark builds network namespaces: run it as root")
    with tempfile.TemporaryDirectory(prefix="ka-chain-") as tmp, \
            LabNetwork(args.nodes, rate=args.rate) as lab:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "data"
        data.write_bytes(os.urandom(args.size_mib * MIB))
        digest = hashlib.sha256(data.read_bytes()).hexdigest()
        runs = []
        for n, kill in ((1, False), (args.nodes, not args.no_kill)):
            print(f"running N={n}{', killing one node' if kill else ''} ...", file=sys.stderr,
                  flush=True)
            runs.append(run(lab, n, data, digest, args, work, kill))
            time.sleep(0.5)  # let the last run's sockets close before the next binds
    one, many = runs
    load = os.getloadavg()
    print(f"{args.nodes} nodes at {args.rate}, {args.size_mib} MiB, chunk {chunk // 1024} KiB"
          f"{'' if args.chunk_size else ' (ka send chose it)'}, "
          f"load average {load[0]:.2f} on {os.cpu_count()} CPUs")
    for r in runs:
        cpu = sorted(r.cpu_per_gib.values())
        cpu_text = (f"CPU per node {statistics.median(cpu):.1f} s/GiB median, {cpu[-1]:.1f} max"
                    if cpu else "CPU not measured")
        print(f"N={r.nodes:<3} T = {r.seconds:6.2f} s  {len(r.ok_nodes)} exact, "
              f"{len(r.bad_nodes)} wrong  {cpu_text}, sender {r.sender_cpu:.1f} s"
              + (f"  FAILED: {r.error}" if r.error else ""))
        if r.killed:
            print(f"      {r.killed} SIGKILLed mid-stream: {r.killed_state} in the report")
        if r.bad_nodes:
            print(f"      wrong or missing: {', '.join(r.bad_nodes)}")
    ratio = many.seconds / one.seconds if one.seconds else float("inf")
    fill = (args.nodes - 1) * chunk / (args.size_mib * MIB)
    print(f"T({args.nodes})/T(1) = {ratio:.3f} (a chunk per hop alone: {1 + fill:.3f})")
    if args.json:
        args.json.write_text(json.dumps({"ratio": ratio, "runs": [asdict(r) for r in runs]},
                                        indent=2) + "\n")
    good = all(not r.error and not r.bad_nodes for r in runs)
    return 0 if good and (many.killed is None or many.killed_state == "evicted") else 1


if __name__ == "__main__":
    sys.exit(main())
