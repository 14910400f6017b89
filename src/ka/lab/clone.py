"""`ka lab clone`: a whole clone, end to end, on one machine.

A lab network (golden node + N nodes, each a network namespace), a golden disk (a sparse file
on a loop device, GPT: ESP vfat, / ext4, /var xfs, swap) holding the golden tree, N blank
disks; `ka clone` runs in the golden namespace, `ka install` in every node namespace; then
every clone is verified against the golden disk and everything is torn down, also on failure
or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ka.errors import KaError, UsageError
from ka.keys import new_key, write_identity, write_key_file
from ka.lab.checks import check_identities
from ka.lab.dashboard import LabDashboard
from ka.lab.disks import (
    Image,
    attached_image,
    expected_partitions,
    fill_esp,
    format_golden,
    fstab_entries,
    golden_desc,
    min_disk_size,
    mounted_tree,
)
from ka.lab.golden import GoldenSpec, build_tree, write_fstab
from ka.lab.image import ServeScript, capture_golden, read_serve_record
from ka.lab.network import LabNetwork, unique_name
from ka.lab.report import LabCloneReport, NodeOutcome, install_report
from ka.lab.verdict import FIXED_UP, GoldenReference, judge_node
from ka.lab.verify import digest_tree
from ka.run import reap_group, signal_group

MiB = 1024 * 1024
GiB = 1024 * MiB
HOSTNAMES = "node{n:02d}"
# Sessions after the plan start with the nodes present after this long (a dead node is
# not waited for).
JOIN_TIMEOUT = 60
GRACE = 30.0  # seconds a node may still run after the golden node is done


@dataclass(frozen=True)
class LabCloneOptions:
    nodes: int = 3
    rate: str | None = "1gbit"
    size: int = 1 * GiB                       # golden disk; node disks the same unless given
    data_bytes: int = 128 * MiB               # regular file data in the golden tree
    small_files: int = 3000
    key: bool = True                          # run the sessions with a session key
    keep: bool = False                        # keep the work directory (images, logs)
    node_sizes: tuple[tuple[int, int], ...] = ()   # (node index, disk size) overrides
    excludes: tuple[str, ...] = ()            # absolute paths in the clone (`ka clone -x`)
    raw_esp: bool = True                      # send the ESP as a raw partition (`ka clone -D`)
    compress: str | None = None
    kill_node: int | None = None              # SIGKILL this node once its extraction runs
    timeout: float = 900.0                    # whole clone, seconds
    workdir: Path | None = None
    extra_clone_args: tuple[str, ...] = ()
    image: bool = False                       # capture the golden, delete it, deploy the image
    serve: bool = False                       # ... with `ka clone --serve --until NODES`
    late_node: int | None = None              # --serve: start it once node1 extracts
    restart_killed: bool = False              # --serve: start kill_node again once killed
    term_golden: bool = False                 # --serve: SIGTERM the golden once node1 extracts
    web: int | None = None                    # `ka clone --web`, forwarded to 127.0.0.1:web
    # (node index, name): it joins with that name (`ka install --name`) and the golden names
    # the others by address; its clone keeps the golden's host name (meant for a failing node)
    node_names: tuple[tuple[int, str], ...] = ()

    def node_size(self, index: int) -> int:
        return dict(self.node_sizes).get(index, self.size)


Step = Callable[[str], None]
Hold = Callable[["LabCloneReport"], None]


def lab_clone(options: LabCloneOptions, on_step: Step | None = None, *,
              on_dashboard: Step | None = None, hold: Hold | None = None,
              cancel: threading.Event | None = None) -> LabCloneReport:
    """Run one lab clone and return what happened on every node, verified.

    With `options.web`, `on_dashboard` is told the dashboard's address once it serves, and
    `hold` is called with the report before the lab is torn down, while the dashboard
    serves the run's history (not when that could not be started). A run in a thread of
    its own ends early, everything removed, with LabCancelled once `cancel` is set (checked
    while the clone runs).
    """
    if os.geteuid() != 0:
        raise KaError("the lab needs root (namespaces, loop devices, mounts)",
                      hint="run it as root, e.g. with sudo")
    step = on_step or (lambda _msg: None)
    desc = golden_desc(options.size)
    if options.size < min_disk_size(desc):
        raise UsageError(f"a golden disk of {options.size // MiB} MiB is too small for the lab "
                         "layout", hint=f"use --size {min_disk_size(desc) // MiB + 1}MiB or more")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ka-lab-clone-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            return _run(options, desc, workdir, stack, step, started,
                        on_dashboard or (lambda url: step(f"dashboard at {url}")), hold,
                        cancel)
    finally:
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(options: LabCloneOptions, desc: str, workdir: Path, stack: contextlib.ExitStack,
         step: Step, started: float, on_dashboard: Step, hold: Hold | None,
         cancel: threading.Event | None) -> LabCloneReport:
    (workdir / "golden.desc").write_text(desc)
    golden_expected = expected_partitions(desc, options.size)
    step(f"golden disk: {options.size // MiB} MiB, GPT: ESP vfat, / ext4, /var xfs, swap")
    # Its own stack: with --image the golden disk is gone before the nodes start.
    golden_stack = stack.enter_context(contextlib.ExitStack())
    golden = golden_stack.enter_context(attached_image(workdir / "golden.img", options.size))
    format_golden(golden, desc)
    root = golden_stack.enter_context(mounted_tree(golden, golden_expected, workdir / "golden",
                                                   read_only=False))
    spec = GoldenSpec(data_bytes=options.data_bytes, small_files=options.small_files)
    tree = build_tree(root, spec)
    esp = next(p for p in golden_expected if p.fstype == "vfat")
    fill_esp(golden.partition(esp.number))
    fstab = write_fstab(root, fstab_entries(golden, golden_expected))
    os.sync()
    excluded = tuple(x.strip("/") for x in options.excludes)
    reference = GoldenReference(
        root=root, digest=digest_tree(root, prune=excluded, ignore=FIXED_UP), fstab=fstab,
        machine_id=(root / "etc/machine-id").read_text().strip(),
        esp_device=golden.partition(esp.number), excluded=excluded, raw_esp=options.raw_esp)
    step(f"golden tree: {tree.files} files, {tree.data_bytes / MiB:.0f} MiB of data, "
         f"kinds: {', '.join(sorted(tree.kinds))}")
    key_file = workdir / "session.key"
    if options.key:
        write_key_file(str(key_file), new_key(), force=True)
        # The safest set-up, as documented: the golden identity pinned on every node.
        write_identity(str(workdir / "identity"), force=True)
    drive = os.path.basename(golden.device)
    captured = None
    if options.image:
        captured = capture_golden(
            workdir, root, drive, workdir / "golden.desc",
            [golden.partition(esp.number)] if options.raw_esp else [], options.excludes,
            key_file if options.key else None, options.compress, reference)
        reference = captured.reference
        golden_stack.close()
        step(f"golden captured in {captured.seconds:.1f} s into {captured.directory.name}/: "
             f"{captured.raw_bytes / MiB:.0f} MiB stored in {captured.stored_bytes / MiB:.0f} "
             "MiB; the golden disk is detached and deleted")

    images: dict[int, Image] = {}
    for i in range(1, options.nodes + 1):
        images[i] = stack.enter_context(
            attached_image(workdir / f"node{i}.img", options.node_size(i)))

    lab = stack.enter_context(LabNetwork(options.nodes, rate=options.rate, name=unique_name()))
    step(f"lab network up: golden + {options.nodes} nodes, links {options.rate or 'unshaped'}")
    prefix = f"lab{os.getpid()}"
    web = LabDashboard(options.web, workdir, lab, stack, on_dashboard) \
        if options.web is not None else None
    names = dict(options.node_names)
    hostnames = HOSTNAMES
    if names:
        # By address: a node that joins with a name of its own gets none from the table.
        hostnames = str(workdir / "hostnames")
        Path(hostnames).write_text("".join(
            f"{lab.hosts[i].address} {HOSTNAMES.format(n=i)}\n"
            for i in range(1, options.nodes + 1) if i not in names))
    clone_argv = _clone_argv(options, prefix, drive, workdir, golden, esp.number, key_file, root,
                             captured.directory if captured else None, hostnames,
                             web.clone_args() if web else [])
    procs = LabProcesses(stack)
    node_argv: dict[str, list[str]] = {}
    t0 = time.monotonic()
    for i, image in images.items():
        target = workdir / f"node{i}" / "target"
        target.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "ka", "install", "--session-prefix", prefix,
                "--disk", f"{drive}={image.device}", "--target", str(target),
                "--find-timeout", str(JOIN_TIMEOUT * 2)]
        if options.key:
            argv += ["--key-file", str(key_file), "--golden-key",
                     str(workdir / "identity" / "golden.pub")]
        if i in names:
            argv += ["--name", names[i]]
        node_argv[f"node{i}"] = lab.argv(i, argv)
        if i != options.late_node:
            procs.start(f"node{i}", node_argv[f"node{i}"], workdir / f"node{i}.log")
    step(f"ka install started on {len(procs.procs)} nodes; ka clone on the golden node")
    procs.start("golden", lab.argv(0, clone_argv), workdir / "golden.log")
    script = ServeScript(options.late_node, options.kill_node if options.restart_killed
                         else None, options.term_golden, node_argv, step)
    ticks: list[Callable[[LabProcesses], None]] = [
        t for t in (script.tick if options.serve else None, web.tick if web else None)
        if t is not None]
    if cancel is not None:
        ticks.append(lambda _p: _cancelled(cancel))

    def tick(p: LabProcesses) -> None:
        for t in ticks:
            t(p)

    killed = procs.wait(t0 + options.timeout,
                        f"node{options.kill_node}" if options.kill_node else None,
                        tick=tick if ticks else None)
    clone_seconds = time.monotonic() - t0
    golden_status = procs.status("golden")
    step(f"ka clone exited with status {golden_status} after {clone_seconds:.1f} s")
    history_up = False
    if web is not None:
        history_up = web.serve_history(procs)
        step(f"ka web serves the run's history at {web.url}" if history_up else
             f"ka web did not start: {tail(procs.log('web'), 3)}")
    served = read_serve_record(workdir / "logs" / prefix) if options.serve else None

    outcomes = []
    assigned = [HOSTNAMES.format(n=n) for n in range(1, options.nodes + 1)]
    if served is not None:
        # Every wave's plan session counts names on, failed attempts included: the names
        # are the ones the golden node gave the nodes it installed.
        assigned = [r["node"] for r in served.get("nodes", []) if r.get("result") == "ok"]
    for i, image in images.items():
        name = f"node{i}"
        status = procs.status(name)
        log = procs.log(name)
        report = install_report(log)
        verdict = None
        if status == 0:
            step(f"verifying {name}")
            expected = expected_partitions(desc, image.size)
            # Waves count positions of their own: a served node's name is any of the names.
            verdict = judge_node(name, image, expected, reference, assigned,
                                 workdir / name / "check",
                                 by_position=not (options.serve or names))
        outcomes.append(NodeOutcome(
            node=name, status=status, killed=name == killed, seconds=procs.seconds(name),
            report=report, log_tail=tail(log), verdict=verdict,
            disk_written=os.stat(image.path).st_blocks * 512))
    verified = [o.verdict for o in outcomes if o.verdict is not None]
    identities = check_identities(reference.machine_id,
                                  {v.node: v.machine_id for v in verified})
    done = LabCloneReport(
        nodes=tuple(outcomes), golden_status=golden_status, golden_log_tail=tail(
            procs.log("golden")), identities=identities, seconds=time.monotonic() - started,
        clone_seconds=clone_seconds, data_bytes=tree.data_bytes, files=tree.files,
        rate=options.rate, workdir=str(workdir) if options.keep else None,
        clone_argv=tuple(clone_argv),
        capture=None if captured is None else (captured.seconds, captured.stored_bytes,
                                               captured.raw_bytes),
        served=served)
    if hold is not None and history_up:
        hold(done)
    return done


class LabCancelled(KaError):
    """The lab's caller asked it to end early."""


def _cancelled(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise LabCancelled("the lab clone was cancelled: everything it made is removed")


def _clone_argv(options: LabCloneOptions, prefix: str, drive: str, workdir: Path, golden: Image,
                esp_number: int, key_file: Path, root: Path, image: Path | None,
                hostnames: str, web: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "ka", "clone", "--nodes", str(options.nodes),
            "--hostnames", hostnames, "--session-prefix", prefix,
            "--logs", str(workdir / "logs"), "--join-timeout", str(JOIN_TIMEOUT), *web]
    if options.key:
        argv += ["--key-file", str(key_file), "--identity", str(workdir / "identity")]
    if image is not None:  # the selection was made at capture
        serve = ["--serve", "--until", str(options.nodes), "--batch-wait", "2"] \
            if options.serve else []
        return [*argv, "--image", str(image), *serve, *options.extra_clone_args]
    argv += ["--root", str(root), "--desc", f"{drive}={workdir / 'golden.desc'}"]
    if options.raw_esp:
        argv += ["--raw", golden.partition(esp_number)]
    for path in options.excludes:
        argv += ["--exclude", path]
    if options.compress:
        argv += ["--compress", options.compress]
    return argv + list(options.extra_clone_args)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    ended: float | None = None


@dataclass
class LabProcesses:
    """The lab's own background processes (`ka`, dnsmasq), each in its own process group so
    that it can be ended whole; all of them are ended when the stack unwinds."""

    stack: contextlib.ExitStack
    procs: dict[str, _Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack.callback(self.end_all)

    def start(self, name: str, argv: list[str], log: Path) -> None:
        # In the work directory: whatever a process writes to its current directory stays
        # with the run.
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=log.parent)
        self.procs[name] = _Proc(popen, log, time.monotonic())

    def wait(self, deadline: float, kill: str | None,
             tick: Callable[[LabProcesses], None] | None = None) -> str | None:
        """Wait for every process until `deadline`; SIGKILL `kill` once it extracts; `tick`
        may start more processes on the way.

        Once the golden node is done, nodes still running get a grace period, not more: no
        session will come for them.
        """
        killed = None
        while time.monotonic() < deadline:
            if tick is not None:
                tick(self)
            running = False
            for proc in self.procs.values():
                if proc.ended is None and proc.popen.poll() is not None:
                    proc.ended = time.monotonic()
                running = running or proc.ended is None
            if not running:
                return killed
            golden_end = self.procs["golden"].ended
            if golden_end is not None:
                deadline = min(deadline, golden_end + GRACE)
            node_ends = [p.ended for n, p in self.procs.items() if n != "golden"]
            if all(node_ends):
                # No node is left to join the golden node's sessions.
                deadline = min(deadline, max(e for e in node_ends if e) + GRACE)
            if kill and killed is None and kill in self.procs:
                victim = self.procs[kill].popen
                if victim.poll() is None and _extracting(victim.pid):
                    os.killpg(victim.pid, signal.SIGKILL)
                    killed = kill
            time.sleep(0.05)
        self.end_all()
        return killed

    def end_all(self) -> None:
        for proc in self.procs.values():
            signal_group(proc.popen)
        for proc in self.procs.values():
            reap_group(proc.popen)
            if proc.ended is None:
                proc.ended = time.monotonic()

    def status(self, name: str) -> int | None:
        return self.procs[name].popen.returncode

    def running(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.popen.poll() is None:
            return True
        if proc.ended is None:
            proc.ended = time.monotonic()
        return False

    def wait_for(self, name: str, seconds: float) -> int | None:
        """Its exit status once it ends within `seconds`, else None (it keeps running)."""
        try:
            self.procs[name].popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
        self.running(name)
        return self.status(name)

    def seconds(self, name: str) -> float:
        p = self.procs[name]
        return (p.ended or time.monotonic()) - p.started

    def log(self, name: str) -> str:
        return self.procs[name].log.read_text(errors="replace")


def _children() -> dict[int, list[tuple[int, str]]]:
    tree: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append((int(entry), comm))
    return tree


def _extracting(pid: int) -> bool:
    """True when a `tar` runs below `pid`: the node is in the filesystem session."""
    tree = _children()
    todo = [pid]
    for _ in range(10000):
        if not todo:
            break
        for child, comm in tree.get(todo.pop(), []):
            if comm == "tar":
                return True
            todo.append(child)
    return False
