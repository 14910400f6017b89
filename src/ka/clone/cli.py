"""`ka clone` (golden node) and `ka install` (each node)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ka.clone import tarstream
from ka.clone.deploy import CloneResult, SessionSettings, run_clone, source_for
from ka.clone.golden import CloneOptions, build_plan, check_disk_options
from ka.clone.hostnames import HostnameRule, parse_pattern, parse_table
from ka.clone.install import InstallOptions, install
from ka.clone.mapping import parse_disk_options
from ka.clone.plan import BootloaderRequest, ClonePlan
from ka.clone.status import STATUS_PORT, StatusService, console
from ka.errors import UsageError

DEFAULT_PORT = 30765

CLONE_EPILOG = """\
The golden layout comes from --desc DRIVE FILE (also DRIVE=FILE) for each golden disk, or,
without --desc, from probing the disks that hold the filesystems mounted under --root. With
--root a mounted tree (e.g. /mnt/golden with /mnt/golden/var mounted too), every block
filesystem mounted there is a golden filesystem; a --desc whose DRIVE is not one of those
disks is applied to the only disk found without a desc, and when --root is a plain
directory (no disk at all) the desc alone defines the disk and the tree is split into its
mount points. Sessions: PREFIX-plan, PREFIX-fs-1.., PREFIX-raw-1.., PREFIX-done, all on
--port; nodes find them by name (--session-prefix) or by address (--host). Node reports
are stored in --logs/PREFIX/NODE.json with a summary.json.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "clone",
        help="clone this (golden) machine onto N nodes running `ka install`",
        description="Stream the golden tree, its layout and fix-up plan to N nodes at once.",
        epilog=CLONE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--nodes", type=int, required=True, help="number of nodes")
    p.add_argument("-x", "--exclude", action="append", default=[], metavar="DIR",
                   help="leave DIR's content out; the nodes re-create it empty (repeatable)")
    p.add_argument("-X", "--exclude-disk", action="append", default=[], metavar="DISK",
                   help="leave a golden disk out; its fstab entries are commented out")
    p.add_argument("-m", "--mbr", action="append", default=[], metavar="DRIVE",
                   help="copy DRIVE's MBR boot code (440 bytes, never the table)")
    p.add_argument("-M", "--mbr-file", nargs=2, action="append", default=[],
                   metavar=("DRIVE", "FILE"), help="install FILE's first 440 bytes as boot code")
    p.add_argument("-D", "--raw", action="append", default=[], metavar="PARTITION",
                   help="copy a partition byte for byte (sda3, /dev/sda3 or DRIVE:N)")
    p.add_argument("-p", "--desc", nargs="+", action="append", default=[],
                   metavar="DRIVE FILE", help="layout of DRIVE on the nodes (also DRIVE=FILE)")
    p.add_argument("-d", "--release-delay", type=int, metavar="TENTHS",
                   help="release the nodes one every TENTHS/10 s at the end")
    p.add_argument("-r", "--bootloader", default="auto", metavar="'grub|none [OPTS]'",
                   help="grub: install it (fail when the clone lacks it); none: skip; "
                        "default auto: when the clone has it. OPTS go to the initramfs tool")
    p.add_argument("--root", default="/", help="the golden tree (default /)")
    p.add_argument("--hostnames", metavar="FILE|PATTERN",
                   help="node names: a pattern like node{n:02d} or a file of "
                        "'MAC|IP|POSITION NAME' lines")
    p.add_argument("--key-file", default=os.environ.get("KA_KEY_FILE"),
                   help="session key (default $KA_KEY_FILE); without one the sessions are open")
    p.add_argument("--compress", metavar="zstd[:LEVEL]", help="compress the streams once")
    p.add_argument("--session-prefix", default="ka", metavar="P", help="session names (ka)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port of every session")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    p.add_argument("--join-timeout", type=float, default=900.0, metavar="S",
                   help="after the plan, start a session with the nodes present after S s")
    p.add_argument("--stall-timeout", type=float, default=5.0, metavar="S")
    p.add_argument("--logs", default="ka-logs", metavar="DIR",
                   help="where node reports are stored (DIR/PREFIX/NODE.json)")
    p.add_argument("--json", action="store_true", help="print the plan or result as JSON")
    p.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    p.set_defaults(func=cmd_clone)

    q = sub.add_parser(
        "install",
        help="become a clone: receive, partition, extract, fix up (run on each node)",
        description="Receive a `ka clone` plan and install it on this machine's disks.",
    )
    where = q.add_mutually_exclusive_group(required=True)
    where.add_argument("--session-prefix", metavar="P", help="find the sessions P-plan... by name")
    where.add_argument("--host", metavar="ADDR", help="contact the golden node directly")
    q.add_argument("--disk", action="append", default=[], metavar="DRIVE=DEV",
                   help="put golden disk DRIVE on DEV (default: free disks in order and size)")
    q.add_argument("--target", default="/mnt/ka", help="where the clone is mounted (/mnt/ka)")
    q.add_argument("--key-file", default=os.environ.get("KA_KEY_FILE"))
    q.add_argument("--port", type=int, default=DEFAULT_PORT)
    q.add_argument("--bootloader", choices=("grub", "none"),
                   help="override the plan: grub (fail without it) or none")
    q.add_argument("--name", help="name to join the plan session with (default: position)")
    q.add_argument("--find-timeout", type=float, default=600.0, metavar="S",
                   help="keep looking for each session this long")
    q.add_argument("--status-port", type=int, default=STATUS_PORT, metavar="P",
                   help=f"port of the status service for `ka console` ({STATUS_PORT}; 0: off)")
    q.add_argument("--allow-exec", action="store_true",
                   help="let `ka console --exec` run commands here (needs --key-file)")
    q.set_defaults(func=cmd_install)

    c = sub.add_parser(
        "console",
        help="show a node's live install log, or run a command there",
        description="Connect to the status service of a node running `ka install`.",
    )
    c.add_argument("node", metavar="NODE", help="address of the node (ADDR or ADDR:PORT)")
    c.add_argument("--port", type=int, default=STATUS_PORT)
    c.add_argument("--key-file", default=os.environ.get("KA_KEY_FILE"))
    c.add_argument("--exec", nargs=argparse.REMAINDER, metavar="CMD",
                   help="run CMD on the node (it must run with --allow-exec and a key)")
    c.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    c.set_defaults(func=cmd_console)


# --- ka clone -------------------------------------------------------------------------------


def _descs(values: list[list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        if len(v) == 1 and "=" in v[0]:
            drive, _, path = v[0].partition("=")
        elif len(v) == 2:
            drive, path = v
        else:
            raise UsageError(f"--desc {' '.join(v)}: expected DRIVE FILE or DRIVE=FILE")
        out[drive] = path
    return out


def _bootloader(value: str) -> BootloaderRequest:
    words = shlex.split(value)
    if not words or words[0] not in ("grub", "none", "auto"):
        raise UsageError(f"--bootloader {value!r}: expected grub, none or auto",
                         hint="lilo is not supported; GRUB 2 handles BIOS and UEFI")
    return BootloaderRequest(words[0], tuple(words[1:]))


def _hostnames(value: str | None) -> HostnameRule | None:
    if value is None:
        return None
    if Path(value).is_file():
        return parse_table(Path(value).read_text(), value)
    return parse_pattern(value)


def read_key(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"--key-file {path}: {e.strerror}") from e


def cmd_clone(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    opts = CloneOptions(
        nodes=args.nodes,
        root=args.root,
        prefix=args.session_prefix,
        excludes=tuple(args.exclude),
        exclude_disks=tuple(args.exclude_disk),
        mbr=tuple(args.mbr),
        mbr_files={d: f for d, f in args.mbr_file},
        raws=tuple(args.raw),
        descs=_descs(args.desc),
        release_delay=args.release_delay,
        bootloader=_bootloader(args.bootloader),
        hostnames=_hostnames(args.hostnames),
        compress=args.compress,
    )
    plan = build_plan(opts)
    check_disk_options(opts, plan)
    settings = SessionSettings(
        root=args.root, port=args.port, key=read_key(args.key_file),
        join_timeout=args.join_timeout, stall_timeout=args.stall_timeout, bind=args.bind,
        logs_dir=args.logs,
    )
    if args.dry_run:
        print(plan.to_json() if args.json else describe_plan(plan, settings), end="")
        return 0
    for note in plan.notes:
        print(f"ka: note: {note}", file=sys.stderr)
    if settings.key is None:
        print("ka: warning: no --key-file: the sessions are open to anyone on the network",
              file=sys.stderr)
    table = LiveTable()
    try:
        result = run_clone(plan, settings, table.event)
    finally:
        table.close()
    if args.json:
        print(json.dumps(_result_json(result), indent=2))
    else:
        print(summary(result))
    return 0 if result.ok else 1


def describe_plan(plan: ClonePlan, settings: SessionSettings) -> str:
    lines = [f"clone plan (version {plan.version}) for {plan.nodes} node(s), "
             f"sessions {', '.join(plan.sessions)} on port {settings.port}"]
    for disk in plan.disks:
        size = f"{disk.size >> 20} MiB" if disk.size else "no device (desc only)"
        lines.append(f"\ngolden disk {disk.name} ({disk.device or '-'}, {size}):")
        lines += ["  " + x for x in disk.desc.splitlines()]
        if disk.boot_code:
            lines.append("  MBR boot code: 440 bytes written after the bootloader step")
    lines.append("\npartitions:")
    for p in plan.partitions:
        lines.append(f"  {p.disk}:{p.number} {p.fstype or '-'} {p.mountpoint or '-'} "
                     f"label={p.label or '-'} uuid={p.uuid or '-'} content={p.content} "
                     f"used={p.used >> 20} MiB")
    lines.append("\nstreams:")
    for s in plan.streams:
        src = source_for(plan, s, settings.root)
        what = shlex.join(src.argv) if hasattr(src, "argv") else f"read {src.path}"
        lines.append(f"  {s.session}: {s.kind} -> {s.disk}:{s.number} {s.mountpoint or ''}")
        lines.append(f"    golden: {what}")
        if s.kind == "tar":
            dest = "TARGET" + (s.mountpoint or "")
            argv = tarstream.extract_argv(dest, selinux=plan.selinux)
            lines.append(f"    node:   {shlex.join(argv)}")
    if plan.excluded_dirs:
        lines.append("\nexcluded directories (re-created empty):")
        lines += [f"  {d.path} mode {d.mode:04o} owner {d.uid}:{d.gid}" for d in plan.excluded_dirs]
    if plan.excluded_disks:
        lines.append(f"\nexcluded disks: {', '.join(plan.excluded_disks)} "
                     f"(fstab entries commented out: {len(plan.excluded_refs)} references)")
    lines.append("\nfstab of the golden tree (rewritten on each node to its new UUIDs):")
    lines += ["  " + x for x in plan.fstab.splitlines()] or ["  (empty)"]
    names = (f"pattern {plan.hostnames.pattern}" if plan.hostnames and plan.hostnames.pattern
             else f"table of {len(plan.hostnames.table)} entries" if plan.hostnames
             else "unchanged (golden's name)")
    lines.append(f"\nhost names: {names}; bootloader: {plan.bootloader.kind} "
                 f"{' '.join(plan.bootloader.options)}".rstrip())
    lines.append("\neach node will: receive the plan; map golden disks to local disks; "
                 "partition, format (new UUIDs) and mount under its target; extract every "
                 "stream; re-create excluded directories; rewrite fstab and the UUIDs in "
                 "grub/crypttab/resume files; new machine-id and SSH host keys; set its host "
                 "name; remove net rules and DHCP leases; regenerate the initramfs and install "
                 "GRUB when the clone has them; write /var/log/ka-install.json; unmount; hand "
                 "its report over in " + plan.done_session + ".")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


class LiveTable:
    """Per-node progress of the current session: a live table on a terminal, lines otherwise."""

    PLAIN_EVERY = 5.0  # seconds between progress lines when not on a terminal

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.session = ""
        self._live: Any = None
        self._last = 0.0
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(stderr=True),
                              refresh_per_second=4, transient=False)
            self._live.start()

    def event(self, session: str, ev: Any) -> None:
        if session != self.session:
            self.session = session
        if ev.kind == "progress":
            for r in ev.data.get("nodes", []):
                name = str(r.get("name") or r.get("node"))
                self.rows[name] = {**r, "session": session}
            if self._live is not None:
                self._live.update(self._render())
            elif time.monotonic() - self._last >= self.PLAIN_EVERY:
                self._last = time.monotonic()
                parts = [f"{n} {r['bytes'] / 1e6:.0f}MB {r['mb_per_s']:.1f}MB/s {r['state']}"
                         for n, r in sorted(self.rows.items()) if r["session"] == session]
                print(f"ka: [{session}] {ev.message}; " + ", ".join(parts),
                      file=sys.stderr, flush=True)
            return
        line = f"ka: [{session}] {ev.message}"
        if self._live is not None:
            self._live.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def _render(self) -> Any:
        from rich.table import Table

        t = Table(title=f"ka clone: session {self.session}")
        for col in ("node", "session", "state", "MB", "MB/s"):
            t.add_column(col, justify="right" if col in ("MB", "MB/s") else "left")
        for name, r in sorted(self.rows.items()):
            t.add_row(name, r["session"], str(r.get("state", "")),
                      f"{r.get('bytes', 0) / 1e6:.1f}", f"{r.get('mb_per_s', 0.0):.1f}")
        return t

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None


def summary(result: CloneResult) -> str:
    lines = ["", "session                 nodes  bytes        seconds  MB/s"]
    for name, rep in result.sessions:
        rate = rep.bytes / rep.seconds / 1e6 if rep.seconds else 0.0
        lines.append(f"{name:<22}  {len(rep.nodes):>5}  {rep.bytes:>11}  {rep.seconds:>7.1f}"
                     f"  {rate:>6.1f}")
    lines += ["", "node          result  seconds  reason"]
    for o in result.nodes:
        secs = f"{o.report.seconds:.1f}" if o.report else "-"
        lines.append(f"{o.name:<12}  {o.result:<6}  {secs:>7}  {o.reason or ''}")
    for w in result.warnings:
        lines.append(f"golden node warning: {w}")
    for e in result.errors:
        lines.append(f"golden node error: {e}")
    ok = sum(1 for o in result.nodes if o.result == "ok")
    lines.append(f"\n{ok}/{len(result.nodes)} node(s) cloned; reports in {result.logs}")
    return "\n".join(lines)


def _result_json(result: CloneResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "logs": result.logs,
        "errors": list(result.errors),
        "warnings": list(result.warnings),
        "sessions": {name: rep.to_json() for name, rep in result.sessions},
        "nodes": [{"name": o.name, "position": o.position, "result": o.result,
                   "reason": o.reason} for o in result.nodes],
    }


# --- ka install -----------------------------------------------------------------------------


def cmd_install(args: argparse.Namespace) -> int:
    opts = InstallOptions(
        prefix=args.session_prefix,
        host=args.host,
        port=args.port,
        key=read_key(args.key_file),
        disks=parse_disk_options(args.disk),
        target=args.target,
        bootloader=args.bootloader,
        name=args.name,
        find_timeout=args.find_timeout,
    )
    t0 = time.monotonic()
    service = None
    if args.status_port:
        try:
            service = StatusService(args.name or socket.gethostname(), opts.key,
                                    port=args.status_port, allow_exec=args.allow_exec)
        except OSError as e:
            print(f"ka: warning: no status service on port {args.status_port}: {e.strerror}",
                  file=sys.stderr)

    def on_step(step: str, status: str) -> None:
        line = f"[{time.monotonic() - t0:7.1f}s] {step}: {status}"
        print(line, file=sys.stderr, flush=True)
        if service is not None:
            service.step(step)
            service.log(line)

    try:
        report = install(opts, on_step, status=service)
    finally:
        if service is not None:
            service.close()
    # stdout carries the report as one JSON line, for whatever drives the node.
    print(json.dumps(dataclasses.asdict(report), sort_keys=True), flush=True)
    if report.result != "ok":
        print(f"ka: error: [{report.node}] install failed: {report.reason}", file=sys.stderr)
        return 1
    print(f"ka: [{report.node}] installed in {report.seconds:.1f} s", file=sys.stderr)
    return 0


# --- ka console -----------------------------------------------------------------------------


def cmd_console(args: argparse.Namespace) -> int:
    host, port = args.node, args.port
    if host.count(":") == 1:
        host, _, text = host.partition(":")
        port = int(text)
    reply = console(host, port, read_key(args.key_file), lambda line: print(line, flush=True),
                    exec_argv=args.exec, connect_timeout=args.connect_timeout)
    if args.exec is None:
        return 0
    if reply.get("refused"):
        raise UsageError(f"{args.node} refused to run the command: {reply['refused']}")
    sys.stdout.write(str(reply.get("stdout", "")))
    sys.stderr.write(str(reply.get("stderr", "")))
    return int(reply.get("status") or 0)
