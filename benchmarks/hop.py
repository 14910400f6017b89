"""One hop, unshaped, on loopback: how fast one `ka receive` takes a stream from `ka send`.

    .venv/bin/python benchmarks/hop.py                 # 1 GiB, keyed and open, once each
    .venv/bin/python benchmarks/hop.py --size-mib 256 --repeat 3 --modes keyed

No lab and no root: the sender listens on 127.0.0.1 at a free port and the node joins it by
address (no discovery). The node writes to /dev/null, the sender reads a file on tmpfs. Printed
per run: the node's stream rate as ka reports it (GB/s, 10^9 bytes), each side's CPU seconds
per GiB (wait4) and peak RSS (VmHWM). The goal: 1 GB/s or more with a key, so that a
10 Gbit/s cluster is not limited by a ka node.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ka.run import run, spawn

MIB = 1 << 20
GIB = 1 << 30
MODES = ("keyed", "open")


@dataclass(frozen=True)
class HopResult:
    mode: str
    size: int
    seconds: float  # the stream, as the sender's report says for the node
    wall: float  # launch of both processes to the node's exit
    send_cpu: float
    receive_cpu: float
    send_rss_kib: int
    receive_rss_kib: int

    @property
    def gb_per_s(self) -> float:
        return self.size / self.seconds / 1e9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if "VmHWM" in line), 0)


def hop(mode: str, data: Path, work: Path, ring_mib: int | None = None) -> HopResult:
    ka = [sys.executable, "-m", "ka"]
    port = str(free_port())
    key = ["--key-file", str(work / "session.key")] if mode == "keyed" else []
    report = work / "hop.json"
    send = [*ka, "send", "--nodes", "1", "--input", str(data), "--bind", "127.0.0.1"]
    send += ["--port", port, "--report", str(report), *key]
    if ring_mib is not None:
        send += ["--ring-size", f"{ring_mib}MiB"]
    receive = [*ka, "receive", "--host", "127.0.0.1", "--port", port, "--output", os.devnull]
    start = time.monotonic()
    procs = [
        spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for argv in (send, [*receive, *key])
    ]
    cpu, rss, end = [0.0, 0.0], [0, 0], start
    try:
        left = {0, 1}
        while left:
            for i in sorted(left):
                rss[i] = max(rss[i], peak_rss_kib(procs[i].pid))
                pid, status, usage = os.wait4(procs[i].pid, os.WNOHANG)
                if pid:
                    procs[i].returncode = os.waitstatus_to_exitcode(status)
                    cpu[i] = usage.ru_utime + usage.ru_stime
                    end = time.monotonic() if i == 1 else end
                    left.discard(i)
            if time.monotonic() - start > 600:
                raise SystemExit("the hop took more than 10 minutes")
            time.sleep(0.005)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                p.wait()
    for p, name in zip(procs, ("ka send", "ka receive"), strict=True):
        if p.returncode != 0:
            assert p.stderr is not None
            raise SystemExit(f"{name} exited {p.returncode}: {p.stderr.read().decode()[-400:]}")
    for p in procs:
        assert p.stderr is not None
        p.stderr.close()
    seconds = float(json.loads(report.read_text())["nodes"][0]["seconds"])
    size = data.stat().st_size
    return HopResult(mode, size, seconds, end - start, cpu[0], cpu[1], rss[0], rss[1])


def print_table(results: Sequence[HopResult]) -> None:
    head = (
        f"{'mode':<6} {'MiB':>6} {'stream s':>8} {'GB/s':>6} {'wall s':>7} "
        f"{'send CPU s/GiB':>14} {'recv CPU s/GiB':>14} {'send RSS':>8} {'recv RSS':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        gib = r.size / GIB
        print(
            f"{r.mode:<6} {r.size / MIB:6.0f} {r.seconds:8.2f} {r.gb_per_s:6.2f} {r.wall:7.2f} "
            f"{r.send_cpu / gib:14.2f} {r.receive_cpu / gib:14.2f} "
            f"{r.send_rss_kib / 1024:7.0f}M {r.receive_rss_kib / 1024:7.0f}M"
        )
    print()
    print(
        "GB/s: 10^9 payload bytes per second of the stream as ka reports it for the node; CPU:\n"
        "each process's user + system seconds (process start-up included) per GiB; RSS: VmHWM."
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="stream size (default 1024)")
    parser.add_argument("--ring-mib", type=int, help="ka send --ring-size (default: ka's)")
    parser.add_argument("--repeat", type=int, default=1, metavar="K", help="runs per mode")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: keyed, open (default: both)"
    )
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if args.repeat < 1 or args.size_mib < 1:
        parser.error("--repeat and --size-mib need at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("KA_KEY_FILE", None)
    results = []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="ka-hop-", dir=shm) as tmp:
        work = Path(tmp)
        run([sys.executable, "-m", "ka", "keygen", str(work / "session.key")])
        data = work / "data"
        with data.open("wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(MIB))
        for _ in range(args.repeat):
            for mode in args.modes:
                results.append(hop(mode, data, work, args.ring_mib))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
