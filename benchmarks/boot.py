"""Boot benchmark: the boot environment delivered to N nodes in the lab, in one stage or two.

Run as root from the repository (it builds virtual labs with `ka.lab.network`):

    .venv/bin/python benchmarks/boot.py                    # N = 1, 8, 32 at 100 Mbit/s
    .venv/bin/python benchmarks/boot.py --quick            # N = 1, 2: a check of the harness
    .venv/bin/python benchmarks/boot.py --nodes 1,8 --rate 1gbit --json figures.json

Both boot environments are built first with `ka bootenv build` from the lab golden system's
own kernel and modules (or --kernel/--modules), with a session key and a golden identity:

  single  `ka bootenv build --single`: every node fetches vmlinuz and the one initramfs by
          TFTP (dnsmasq, as `ka pxe serve` runs it, in the golden node's namespace)
  stage2  `ka bootenv build`: every node fetches vmlinuz and stage1 by TFTP, then stage2
          through the chain: `ka send` of the session PREFIX-stage2 on port 30764 on the golden
          node (signed and keyed, as `ka clone` serves it), `ka receive --session PREFIX-stage2`
          on every node (as stage1's /init runs it)

TFTP runs busybox's client (`tftp -g -b 1468`, a PXE ROM's usual block size) on every node at
once; the chain starts once every node has stage1, as a real session does (it waits for the
nodes that boot together). No machine is booted: what is measured is the delivery.

Columns: *total s* until every node holds everything it needs (TFTP and, for stage2, the
chain); *TFTP s*; *chain s* from launching the nodes' `ka receive` to the last one's exit
(process start-up and discovery included), and *stream s* the session's own time from its
first byte until every node has all of it; *golden MB* the bytes the golden node's eth0 sent
(frames, headers included); *CPU s/GiB* the busiest node's `ka receive` CPU per GiB of stage2;
*load* the machine's 1-minute load average at the start and end of the run (the lab shares
the machine's cores with whatever else runs: figures are only as quiet as that). After the
table: T(N)/T(1) of the chain part, the goal being <= 1.1, and each node's `ka receive` CPU
split at the session's start (read from /proc when `ka send --json` says 'start'): before it
(start-up, discovery, join) and during the stream. Every copy is checked (SHA-256)
against the built files; the run fails if one differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ka.lab.network import LabNetwork, parse_rate

METHODS = ("single", "stage2")
FULL_NODES = (1, 8, 32)
QUICK_NODES = (1, 2)
BLOCK_SIZE = 1468  # TFTP block size a PXE ROM asks for (1500-byte frames)
PREFIX = "bench"
PAYLOAD_SHARE = 1448 / 1538  # TCP payload per byte on the wire, 1500-byte frames
MIB = 1024 * 1024
GIB = 1024 * MIB
TIMEOUT = 900.0  # one TFTP fetch or chain session; 32 nodes of a single initramfs: ~2 min


@dataclass
class Run:
    method: str
    nodes: int
    rate: str
    total: float = 0.0
    tftp: float = 0.0
    chain: float | None = None  # launch of the nodes' ka receive to the last one's exit
    stream: float | None = None  # the session's first byte to every node having all of it
    golden_bytes: int = 0
    tftp_bytes: int = 0  # payload fetched by TFTP per node
    chain_bytes: int = 0  # stage2's size
    node_cpu_per_gib: float | None = None  # the busiest ka receive
    node_cpu: list[float] = field(default_factory=list)  # each ka receive's CPU seconds
    # each ka receive's CPU seconds from the session's start (the sender's 'start' event) to
    # its exit: what the stream itself costs a node, start-up and discovery left out
    stream_cpu: list[float] = field(default_factory=list)
    cores: int = 0  # this machine's, shared by every process of the lab
    load: tuple[float, float] = (0.0, 0.0)
    exact: bool = False
    error: str | None = None  # why this run did not deliver
    built: dict[str, str] = field(default_factory=dict)  # file -> sha256 of what was built
    copies: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> file -> sha256


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", help="comma-separated node counts (default 1,8,32; --quick 1,2)")
    p.add_argument("--rate", default="100mbit", help="link rate (default 100mbit)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)} (default both)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    p.add_argument("--quick", action="store_true", help="N = 1, 2 only")
    p.add_argument("--kernel", help="kernel image (default: the lab golden system's)")
    p.add_argument("--modules", help="its modules directory (with --kernel)")
    args = p.parse_args(argv)
    text = args.nodes or ",".join(map(str, QUICK_NODES if args.quick else FULL_NODES))
    try:
        args.nodes = sorted({int(n) for n in text.split(",") if n.strip()})
    except ValueError:
        p.error(f"--nodes {text!r}: give comma-separated numbers")
    if not args.nodes or args.nodes[0] < 1:
        p.error("--nodes: every count must be at least 1")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown or not args.methods:
        p.error(f"--methods: unknown {', '.join(sorted(unknown)) or '(none)'}; "
                f"use {', '.join(METHODS)}")
    if bool(args.kernel) != bool(args.modules):
        p.error("--kernel and --modules go together")
    parse_rate(args.rate)  # an unknown rate is said before anything is built
    return args


def chain_ratios(runs: Sequence[Run]) -> dict[int, tuple[float | None, float | None]]:
    """N -> (T(N)/T(1) of the chain's stream, of the chain's wall time), stage2 runs only."""
    chains = {r.nodes: r for r in runs if r.method == "stage2" and r.chain is not None}
    one = chains.get(1)
    if one is None:
        return {}

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {n: (ratio(r.stream, one.stream), ratio(r.chain, one.chain))
            for n, r in sorted(chains.items())}


def table(runs: Sequence[Run]) -> str:
    head = (f"{'method':<8}{'N':>4}{'total s':>9}{'TFTP s':>8}{'chain s':>9}{'stream s':>10}"
            f"{'golden MB':>11}{'CPU s/GiB':>11}{'load':>12}  copies")

    def num(x: float | None, width: int, digits: int = 1) -> str:
        return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"

    lines = [head]
    for r in runs:
        load = f"{r.load[0]:.1f}-{r.load[1]:.1f}"
        total = None if r.error else r.total
        lines.append(f"{r.method:<8}{r.nodes:>4}{num(total, 9)}{num(r.tftp, 8)}"
                     f"{num(r.chain, 9)}{num(r.stream, 10, 2)}{r.golden_bytes / 1e6:>11.1f}"
                     f"{num(r.node_cpu_per_gib, 11, 2)}{load:>12}  "
                     f"{'exact' if r.exact else 'FAILED' if r.error else 'DIFFER'}")
    ratios = chain_ratios(runs)
    for n, (stream, wall) in ratios.items():
        if n == 1:
            continue
        verdict = "" if stream is None else ("  (goal <= 1.1: met)" if stream <= 1.1
                                             else "  (goal <= 1.1: NOT met)")
        lines.append(f"chain T({n})/T(1): stream {num(stream, 0, 3).strip()}, "
                     f"wall {num(wall, 0, 3).strip()}{verdict}")
    lines += [line for r in runs if (line := stream_cpu(r))]
    lines += [line for r in runs if (line := cpu_bound(r))]
    lines += [f"{r.method}, N={r.nodes}: {r.error}" for r in runs if r.error]
    return "\n".join(lines)


def stream_cpu(r: Run) -> str | None:
    """Each node's CPU split at the session's start: before it (start-up, discovery, join)
    and during the stream."""
    if not r.stream_cpu or len(r.stream_cpu) != len(r.node_cpu):
        return None
    before = [t - d for t, d in zip(r.node_cpu, r.stream_cpu, strict=True)]
    n = len(r.stream_cpu)
    return (f"stage2, N={r.nodes}: ka receive CPU per node: {sum(before) / n:.2f} s before "
            f"the stream, {sum(r.stream_cpu) / n:.2f} s during it (the busiest "
            f"{max(r.stream_cpu):.2f} s; {sum(r.stream_cpu):.1f} s for all)")


def cpu_bound(r: Run) -> str | None:
    """A line when the nodes' CPU, spread over the machine's cores, took longer than the link
    needs for stage2: the chain's time then says how busy the machine was, not the network."""
    bits = parse_rate(r.rate)
    if not r.node_cpu or not bits or not r.cores:
        return None
    link = r.chain_bytes / (bits / 8 * PAYLOAD_SHARE)
    spread = sum(r.node_cpu) / r.cores
    if spread <= link:
        return None
    return (f"stage2, N={r.nodes}: CPU-bound: the nodes' ka receive used {sum(r.node_cpu):.1f} "
            f"CPU s ({max(r.node_cpu):.2f} s the busiest), {spread:.1f} s on {r.cores} cores, "
            f"against {link:.1f} s of link time for stage2")


# --- building the boot environments --------------------------------------------------------

def golden_kernel(work: Path) -> tuple[Path, Path]:
    """The lab golden system's kernel and modules, unpacked from its cached archive."""
    from ka.lab.debian import DEFAULT_CACHE, DebianRecipe, host_mirror, host_suite

    archive = DebianRecipe(host_suite(), host_mirror()).archive(DEFAULT_CACHE)
    if not archive.exists():
        raise SystemExit(f"boot.py: no lab golden archive {archive} (scripts/setup.sh makes "
                         "it); or give --kernel and --modules")
    root = work / "golden"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(root), "--wildcards",
                    "./boot/vmlinuz-*", "./usr/lib/modules/*"], check=True)
    for kernel in sorted((root / "boot").glob("vmlinuz-*"), reverse=True):
        modules = root / "usr/lib/modules" / kernel.name.removeprefix("vmlinuz-")
        if modules.is_dir():
            return kernel, modules
    raise SystemExit(f"boot.py: no kernel with its modules in {archive}")


def ka(*args: str) -> list[str]:
    return [sys.executable, "-m", "ka", *args]


def build(work: Path, kernel: Path, modules: Path) -> dict[str, Path]:
    """Key, identity, and both boot environments; method -> its directory."""
    def quiet(argv: list[str]) -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    quiet(ka("keygen", str(work / "key")))
    quiet(ka("keygen", "--identity", str(work / "identity")))
    out = {method: work / method for method in METHODS}
    argv = {method: ka("bootenv", "build", "--output", str(out[method]), "--kernel", str(kernel),
                       "--modules", str(modules), "--key-file", str(work / "key"),
                       "--golden-key", str(work / "identity/golden.pub"),
                       *(["--single"] if method == "single" else []))
            for method in METHODS}
    # Both at once: each is mostly one process's strip and compression.
    builds = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
              for a in argv.values()]
    errors = [b.communicate()[1].decode(errors="replace") for b in builds]
    if any(b.returncode for b in builds):
        raise SystemExit("boot.py: ka bootenv build failed: " + " ".join(errors))
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


# --- one run in a lab ------------------------------------------------------------------------

def golden_tx(lab: LabNetwork) -> int:
    result = lab.run(0, ["cat", "/sys/class/net/eth0/statistics/tx_bytes"])
    return int(result.stdout)


def serve_tftp(lab: LabNetwork, env: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    """`ka pxe serve` (dnsmasq) in TFTP-only mode on the golden node, its tree from `env`."""
    subprocess.run(ka("pxe", "config", "--interface", "eth0", "--tftp-only", "--dir",
                      str(state), "--bootenv", str(env)),
                   check=True, stdout=subprocess.DEVNULL)
    with log.open("wb") as err:
        proc = lab.spawn(0, ka("pxe", "serve", "--dir", str(state)),
                         stderr=err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if "serving on eth0" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"boot.py: ka pxe serve did not start: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def fetch_all(lab: LabNetwork, n: int, server: str, files: Sequence[str], out: Path) -> float:
    """Every node fetches `files` one after another by TFTP, all nodes at once; seconds until
    the last one has them."""
    errors: list[str] = []

    def node(i: int) -> None:
        for name in files:
            local = out / f"node{i}" / name
            result = lab.run(i, ["busybox", "tftp", "-g", "-b", str(BLOCK_SIZE), "-r",
                                 f"ka/{name}", "-l", str(local), server],
                             check=False, timeout=TIMEOUT)
            if result.returncode != 0:
                errors.append(f"node{i} {name}: {result.stderr.strip()}")
                return

    t0 = time.monotonic()
    threads = [threading.Thread(target=node, args=(i,)) for i in range(1, n + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RunFailed("TFTP failed: " + "; ".join(errors))
    return time.monotonic() - t0


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a running process has used so far, or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_start(sender: subprocess.Popen[bytes], nodes: Sequence[subprocess.Popen[bytes]],
                at_start: list[float | None]) -> threading.Thread:
    """Reads `ka send --json`; at its 'start' event, every node's CPU so far into at_start."""
    def read() -> None:
        assert sender.stdout is not None
        for line in sender.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "start" and not at_start:
                at_start.extend(process_cpu(p.pid) for p in nodes)

    thread = threading.Thread(target=read, name="sender-events", daemon=True)
    thread.start()
    return thread


def chain(lab: LabNetwork, n: int, stage2: Path, work: Path,
          out: Path) -> tuple[float, float, list[float], list[float]]:
    """stage2 through one session PREFIX-stage2: (wall s, stream s, each node's CPU s, each
    node's CPU s during the stream)."""
    from ka.boot.init_script import STAGE2_PORT
    from ka.clone.stage2 import STAGE2_CHUNK

    common = ["--session", f"{PREFIX}-stage2", "--port", str(STAGE2_PORT), "--key-file",
              str(work / "key")]
    logs = [(out / f"node{i}.log").open("wb") for i in range(n + 1)]
    try:
        nodes = [lab.spawn(i, ka("receive", *common, "--output", str(out / f"node{i}/stage2"),
                                 "--golden-key", str(work / "identity/golden.pub")),
                           stdout=subprocess.DEVNULL, stderr=logs[i]) for i in range(1, n + 1)]
        t0 = time.monotonic()
        sender = lab.spawn(0, ka("send", *common, "--nodes", str(n), "--input", str(stage2),
                                 "--chunk-size", f"{STAGE2_CHUNK // 1024}K",
                                 "--identity", str(work / "identity"), "--report",
                                 str(out / "stage2.json"), "--json"),
                           stdout=subprocess.PIPE, stderr=logs[0])
        at_start: list[float | None] = []
        events = watch_start(sender, nodes, at_start)
    finally:
        for log in logs:
            log.close()
    cpu: list[float] = []
    failed = []
    try:
        for i, proc in enumerate(nodes, 1):
            # wait4: `ip netns exec` execs the command, so this is ka receive's own usage.
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu.append(usage.ru_utime + usage.ru_stime)
            if proc.returncode != 0:
                lines = (out / f"node{i}.log").read_text(errors="replace").splitlines()
                failed.append(lines[-1] if lines else f"exit status {proc.returncode}")
        wall = time.monotonic() - t0
        sender.wait(timeout=TIMEOUT)
        events.join(timeout=10)
    finally:
        for proc in [*nodes, sender]:
            if proc.returncode is None:
                stop(proc)
    if failed:
        why = "; ".join(f"{failed.count(e)} x {e}" for e in dict.fromkeys(failed))
        raise RunFailed(f"stage2: {len(failed)} of {n} node(s) failed: {why}")
    if sender.returncode != 0:
        lines = (out / "node0.log").read_text(errors="replace").splitlines()
        raise RunFailed(f"stage2: ka send failed: {lines[-1] if lines else sender.returncode}")
    session = json.loads((out / "stage2.json").read_text())
    during = ([c - (s or 0.0) for c, s in zip(cpu, at_start, strict=True)]
              if len(at_start) == len(cpu) else [])
    return wall, session["seconds"] + session["drain_seconds"], cpu, during


class RunFailed(Exception):
    """One run did not deliver: said in its row, and the benchmark goes on with the next."""


def run_one(method: str, n: int, rate: str, env: Path, work: Path) -> Run:
    files = ["vmlinuz", "initrd.img"]
    result = Run(method, n, rate, load=(os.getloadavg()[0], 0.0), cores=os.cpu_count() or 1)
    out = Path(tempfile.mkdtemp(prefix="ka-boot-bench-", dir="/dev/shm"))
    os.chmod(out, 0o755)
    try:
        for i in range(1, n + 1):
            (out / f"node{i}").mkdir()
        with LabNetwork(n, rate=rate) as lab:
            serve = serve_tftp(lab, env, work / f"pxe-{method}-{n}", out / "serve.log")
            try:
                tx0 = golden_tx(lab)
                result.tftp = fetch_all(lab, n, lab.hosts[0].address, files, out)
            finally:
                stop(serve)
            result.total = result.tftp
            if method == "stage2":
                wall, result.stream, result.node_cpu, result.stream_cpu = chain(
                    lab, n, env / "stage2.cpio.gz", work, out)
                result.chain, result.total = wall, result.tftp + wall
                result.chain_bytes = (env / "stage2.cpio.gz").stat().st_size
                result.node_cpu_per_gib = max(result.node_cpu) / (result.chain_bytes / GIB)
                files.append("stage2")
            result.golden_bytes = golden_tx(lab) - tx0
        result.tftp_bytes = sum((env / f).stat().st_size for f in ("vmlinuz", "initrd.img"))
        result.built = {f: sha256(env / ("stage2.cpio.gz" if f == "stage2" else f))
                        for f in files}
        result.copies = {f"node{i}": {f: sha256(out / f"node{i}" / f) for f in files}
                         for i in range(1, n + 1)}
        result.exact = all(c == result.built for c in result.copies.values())
    except RunFailed as e:
        result.error = str(e)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result.load = (result.load[0], os.getloadavg()[0])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("boot.py: run it as root (it builds network namespaces)")
    # dnsmasq reads the TFTP tree after dropping root: a work directory all may enter.
    work = Path(tempfile.mkdtemp(prefix="ka-boot-bench-"))
    os.chmod(work, 0o755)
    runs: list[Run] = []
    try:
        kernel, modules = ((Path(args.kernel), Path(args.modules)) if args.kernel
                           else golden_kernel(work))
        print(f"building both boot environments from {kernel.name}", flush=True)
        envs = build(work, kernel, modules)
        for env in envs.values():
            for f in env.iterdir():
                f.chmod(0o644)
            print("  " + ", ".join(f"{env.name}/{f.name} {f.stat().st_size / MIB:.1f} MiB"
                                   for f in sorted(env.iterdir())), flush=True)
        for n in args.nodes:
            for method in args.methods:
                print(f"{method}: {n} node(s) at {args.rate}", flush=True)
                runs.append(run_one(method, n, args.rate, envs[method], work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"runs": [asdict(r) for r in runs],
             "chain_ratios": {str(n): {"stream": s, "wall": w}
                              for n, (s, w) in chain_ratios(runs).items()}}, indent=2) + "\n")
    return 0 if runs and all(r.exact for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
