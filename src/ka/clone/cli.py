"""`ka clone` (golden node) and `ka install` (each node)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ka.boot.cli import DEFAULT_DIR as PXE_DIR
from ka.clone import bootswitch
from ka.clone.deploy import (
    DEFAULT_LOGS,
    NodeOutcome,
    ReleaseHookResult,
    SessionSettings,
    check_settings,
    run_clone,
)
from ka.clone.golden import CloneOptions, build_plan, check_disk_options
from ka.clone.hostnames import HostnameRule, parse_pattern, parse_table
from ka.clone.install import InstallOptions, install
from ka.clone.mapping import parse_disk_options
from ka.clone.nodedisks import fit_warnings
from ka.clone.plan import BootloaderRequest, ClonePlan
from ka.clone.stage2 import (
    STAGE2_PORT,
    check_port,
    check_stage2,
    serving_stage2,
    stage2_path,
)
from ka.clone.status import STATUS_PORT, StatusService, console
from ka.clone.view import (
    LiveTable,
    describe_plan,
    describe_switch,
    expected_bytes,
    result_json,
    session_steps,
    summary,
)
from ka.errors import UsageError
from ka.image.deploy import image_sources
from ka.image.serve_cli import WAVES
from ka.image.store import DEFAULT_STORE
from ka.keys import (
    add_golden_key_option,
    add_identity_option,
    add_key_option,
    golden_key_from_args,
    identity_from_args,
    key_from_args,
)
from ka.options import SESSION_PREFIX, add_port_option, add_session_prefix_option
from ka.transport.view import printable
from ka.web.cli import add_web_options, maybe_dashboard
from ka.web.state import Deployment as LiveDeployment

CLONE_EPILOG = """\
The golden layout comes from --desc DRIVE FILE (also DRIVE=FILE) for each golden disk, or,
without --desc, from probing the disks that hold the filesystems mounted under --root. With
--root a mounted tree (e.g. /mnt/golden with /mnt/golden/var mounted too), every block
filesystem mounted there is a golden filesystem; a --desc whose DRIVE is not one of those
disks is applied to the only disk found without a desc, and when --root is a plain
directory (no disk at all) the desc alone defines the disk and the tree is split into its
mount points. Sessions, one after another, each on its own port counted from --port:
PREFIX-plan on P, PREFIX-fs-1.. (tar of each filesystem), PREFIX-raw-1.. (--raw
partitions), PREFIX-done (release barrier, node reports) on the next ones; nodes find them by
name (`ka install --session-prefix`) or by address (`ka install --host`, same --port). MBR
boot code (--mbr/--mbr-file) travels inside the plan. Node reports are stored in
--logs/PREFIX/NODE.json with a summary.json (--logs: /var/log/ka by default); the
summary's last line says where. Exit status: 0 when every node installed
(stream digests checked, every step succeeded), 1 when any node failed.

--pxe [DIR] (DIR: the `ka pxe` state directory, default /var/lib/ka/pxe): the nodes hand
their reports over in PREFIX-report, before PREFIX-done releases them; in between, every
node that installed is switched to local boot (`ka pxe set MAC local`) and a failed node stays
on ka. A node is matched in DIR's node table by the MAC and IP address of the interface it
reached this machine through (it reports them), the address it joined from or its name,
else by the MAC it reports. An installed node that cannot be switched (it matches nothing,
or shares its MAC with a failed node) still boots ka: the clone then exits 1 and says which
node and the `ka pxe set` command to run.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "clone",
        help="clone this (golden) machine onto N nodes running `ka install`",
        description="Stream the golden tree, its layout and fix-up plan to N nodes at once.",
        epilog=CLONE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--nodes", type=int,
                   help="number of nodes (with --serve: of one wave, at most; default 1000)")
    p.add_argument("--wait-timeout", type=float, metavar="S",
                   help="start with the nodes present after S s (at least --min-nodes) "
                        "instead of waiting for all --nodes")
    p.add_argument("--min-nodes", type=int, metavar="M",
                   help="with --wait-timeout: how many nodes must have come (default 1)")
    add_selection_options(p)
    image = p.add_argument_group(
        "deploying an image (--image)",
        "Send a captured image (`ka image capture`) instead of this machine's tree: the "
        "selection options above then have no meaning (-r still overrides the bootloader).")
    image.add_argument("--image", metavar="DIR|NAME",
                       help="the image directory, or NAME in the --store")
    image.add_argument("--store", default=DEFAULT_STORE, metavar="DIR",
                       help=f"where a bare image NAME is looked for ({DEFAULT_STORE})")
    image.add_argument("--unauthenticated-image", action="store_true",
                       help="with --key-file, accept an image captured without a key")
    image.add_argument("--serve", action="store_true",
                       help="keep serving: install the nodes that come, wave after wave, "
                            "until --until or SIGINT/SIGTERM (a failed node that boots again "
                            "is installed again)")
    image.add_argument("--batch-wait", type=float, metavar="S",
                       help="with --serve: start a wave S s after its first node (default: "
                            "at once), to gather more nodes into it")
    image.add_argument("--until", type=int, metavar="N",
                       help="with --serve: end once N nodes are installed (exit 0 when "
                            "they are; a node's failed attempt is in the summary, and exit 1 "
                            "after SIGINT/SIGTERM or a golden-side error)")
    p.add_argument("--hostnames", metavar="FILE|PATTERN",
                   help="node names: a pattern like node{n:02d} or a file of "
                        "'MAC|IP|POSITION NAME' lines")
    add_key_option(p, "; without one the sessions are open")
    add_identity_option(p)
    add_session_prefix_option(p, f"session names ({SESSION_PREFIX})")
    add_port_option(p, "port of the plan session; the next sessions use the next ports")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    p.add_argument("--join-timeout", type=float, default=900.0, metavar="S",
                   help="after the plan, start a session with the nodes present after S s")
    p.add_argument("--stall-timeout", type=float, default=5.0, metavar="S")
    p.add_argument("--logs", default=DEFAULT_LOGS, metavar="DIR",
                   help=f"where node reports are stored: DIR/PREFIX/NODE.json and "
                        f"summary.json (default {DEFAULT_LOGS})")
    p.add_argument("--pxe", nargs="?", const=PXE_DIR, metavar="DIR",
                   help="switch each node that installed to local boot in the `ka pxe` "
                        f"state DIR ({PXE_DIR}) before releasing it; failed nodes stay on ka")
    boot = p.add_argument_group(
        "network boot, stage2",
        "Nodes booted by `ka pxe` run stage1 (`ka bootenv build`), which asks for stage2 in "
        "the session PREFIX-stage2 before it runs ka install. ka clone serves it for as long "
        "as it runs: nodes that boot together share one session, a later node gets the next.")
    boot.add_argument("--stage2", metavar="FILE",
                      help="serve this stage2.cpio.gz (default with --pxe: the one `ka pxe "
                           "config --bootenv` put in the TFTP tree, if any)")
    boot.add_argument("--no-stage2", action="store_true",
                      help="with --pxe, serve no stage2 (a --single boot environment)")
    boot.add_argument("--stage2-port", type=int, default=STAGE2_PORT, metavar="PORT",
                      help=f"port of the stage2 sessions ({STAGE2_PORT}; the nodes' "
                           "ka.stage2_port=)")
    p.add_argument("--json", action="store_true", help="print the plan or result as JSON")
    p.add_argument("--dry-run", action="store_true", help="print the plan, send nothing")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the checks of `ka doctor --golden` made before anything starts")
    add_web_options(p)
    p.set_defaults(func=cmd_clone)

    q = sub.add_parser(
        "install",
        help="become a clone: receive, partition, extract, fix up (run on each node)",
        description="Receive a `ka clone` plan and install it on this machine's disks.",
    )
    where = q.add_mutually_exclusive_group()
    add_session_prefix_option(where, "find the sessions P-plan... by name (default: "
                              f"{SESSION_PREFIX}, as `ka clone`)", default=None)
    where.add_argument("--host", metavar="ADDR", help="contact the golden node directly")
    q.add_argument("--disk", action="append", default=[], metavar="DRIVE=DEV",
                   help="put golden disk DRIVE on DEV (default: free disks in order and size)")
    q.add_argument("--target", default="/mnt/ka", help="where the clone is mounted (/mnt/ka)")
    add_key_option(q)
    add_golden_key_option(q)
    add_port_option(q, "the --port of `ka clone` (its sessions use the next ports too)")
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
    add_key_option(c, "; --exec needs one")
    c.add_argument("--exec", nargs=argparse.REMAINDER, metavar="CMD",
                   help="run CMD on the node (it must run with --allow-exec and a key)")
    c.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    c.set_defaults(func=cmd_console)


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """What to read from the golden machine: shared by `ka clone` and `ka image capture`,
    with the same meaning (the original's letters)."""
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
    p.add_argument("-r", "--bootloader", default=None, metavar="'grub|none [OPTS]'",
                   help="grub: install it (fail when the clone lacks it); none: skip; "
                        "default auto: when the clone has it. OPTS go to the initramfs tool")
    p.add_argument("--root", default=None, help="the golden tree (default /)")
    p.add_argument("--compress", metavar="zstd[:LEVEL]", help="compress the streams once")


# Each selection option with its default: with --image, any other value is refused.
SELECTION: tuple[tuple[str, str, Any], ...] = (
    ("exclude", "--exclude", []), ("exclude_disk", "--exclude-disk", []), ("mbr", "--mbr", []),
    ("mbr_file", "--mbr-file", []), ("raw", "--raw", []), ("desc", "--desc", []),
    ("root", "--root", None), ("compress", "--compress", None))


def selection_options(args: argparse.Namespace, *, nodes: int, prefix: str = "ka",
                      reports_before_release: bool = False) -> CloneOptions:
    return CloneOptions(
        nodes=nodes,
        root=args.root or "/",
        prefix=prefix,
        excludes=tuple(args.exclude),
        exclude_disks=tuple(args.exclude_disk),
        mbr=tuple(args.mbr),
        mbr_files={d: f for d, f in args.mbr_file},
        raws=tuple(args.raw),
        descs=_descs(args.desc),
        bootloader=_bootloader(args.bootloader or "auto"),
        compress=args.compress,
        reports_before_release=reports_before_release,
    )


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


def cmd_clone(args: argparse.Namespace) -> int:
    if args.serve and args.image is None:
        raise UsageError("--serve needs --image",
                         hint="capture the golden first: ka image capture --output DIR")
    if not args.serve and (args.batch_wait is not None or args.until is not None):
        raise UsageError("--batch-wait and --until need --serve")
    if args.nodes is None:
        if not args.serve:
            raise UsageError("--nodes is required (how many nodes to wait for)",
                             hint="or --wait-timeout S to start with those present after S s")
        args.nodes = 1000
    if args.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    if args.min_nodes is not None and args.wait_timeout is None:
        raise UsageError("--min-nodes needs --wait-timeout")
    if args.serve and args.wait_timeout is not None:
        raise UsageError("--wait-timeout has no meaning with --serve",
                         hint="use --batch-wait to gather nodes into a wave")
    key = key_from_args(args)  # a bad key file is said before any disk is probed
    opts = dataclasses.replace(
        selection_options(args, nodes=args.nodes, prefix=args.session_prefix,
                          reports_before_release=args.pxe is not None),
        release_delay=args.release_delay, hostnames=_hostnames(args.hostnames))
    # Checked before anything is sent: a state that cannot be switched is found out now,
    # not after the nodes are installed.
    pxe = bootswitch.check_state(args.pxe) if args.pxe is not None else None
    stage2 = stage2_path(args.stage2, pxe, args.no_stage2)
    settings = SessionSettings(
        root=args.root or "/", port=args.port, key=key, identity=identity_from_args(args),
        join_timeout=args.join_timeout, stall_timeout=args.stall_timeout, bind=args.bind,
        logs_dir=args.logs, wait_timeout=args.wait_timeout,
        min_nodes=args.min_nodes or (1 if args.wait_timeout is not None else None),
    )
    sources = None
    if args.web is not None:
        from ka.web.server import parse_address

        parse_address(args.web)  # said before the image is checked or a disk probed
    if args.image is not None:
        directory, manifest, plan = _image_plan(args, settings.key)
        sources = image_sources(directory, manifest, plan)
        source = f"image {manifest.name}"
    else:
        if not args.no_preflight:  # planning runs them: said as ka doctor says it, first
            from ka.doctor.checks import tools
            from ka.doctor.roles import GOLDEN_TOOLS, require

            require("golden", tools(GOLDEN_TOOLS))
        plan = build_plan(opts)
        check_disk_options(opts, plan)
        source = f"golden {plan.golden_hostname or socket.gethostname()}"
    settings = dataclasses.replace(settings, source=source)
    check_settings(plan, settings)
    if stage2 is not None:
        check_port(args.stage2_port, plan, settings.port, WAVES if args.serve else 0)
    if not args.dry_run and not args.no_preflight:
        _preflight(args, plan, settings, stage2 is not None)
    # Said on the golden side, before any node joins: each node would refuse it anyway.
    for warning in fit_warnings(plan):
        print(f"ka: warning: {warning}", file=sys.stderr)
    if not args.dry_run or args.json:  # the text of --dry-run ends with them already
        for note in plan.notes:
            print(f"ka: note: {note}", file=sys.stderr)
    if args.dry_run:
        if args.json:
            print(plan.to_json(), end="")
        else:
            print(describe_plan(plan, settings, sources), end="")
            if pxe is not None:
                assert plan.report_session is not None
                print(f"\nnetwork boot (--pxe): {bootswitch.describe(pxe, plan.report_session)}")
            if stage2 is not None:
                print(f"stage2: {stage2} ({check_stage2(stage2) / 2**20:.1f} MiB) in "
                      f"{plan.prefix}-stage2 on port {args.stage2_port}")
        return 0
    if settings.key is None:
        print("ka: warning: no --key-file: the sessions are open to anyone on the network",
              file=sys.stderr)
    live = LiveDeployment.of_plan(plan, source, serve=args.serve)
    with maybe_dashboard(args, live, settings.key) as web, \
            serving_stage2(stage2, plan, settings, args.stage2_port):
        if args.serve:
            from ka.image.serve_cli import run_serve

            return run_serve(args, settings, plan, directory, manifest, live=web)
        return _clone(args, settings, plan, sources, web)


def _clone(args: argparse.Namespace, settings: SessionSettings, plan: ClonePlan,
           sources: Any, web: LiveDeployment | None) -> int:
    table = LiveTable(expected_bytes(plan), session_steps(plan))

    def on_event(session: str, ev: Any) -> None:
        table.event(session, ev)
        if web is not None:
            web.event(session, ev)

    switched: list[bootswitch.BootSwitch] = []

    def switch(outcomes: tuple[NodeOutcome, ...]) -> ReleaseHookResult:
        assert args.pxe is not None
        done = bootswitch.switch_boot(args.pxe, outcomes)
        switched.append(done)
        left = f", {len(done.unswitched)} installed node(s) NOT switched" if done.unswitched else ""
        table.say(f"ka: [pxe] {len(done.local)} node(s) switched to local boot in {args.pxe}"
                  f"{left}, {len(done.warnings)} warning(s); releasing the nodes")
        return ReleaseHookResult(done.to_json(), done.errors)

    try:
        result = run_clone(plan, settings, on_event,
                           before_release=switch if args.pxe is not None else None,
                           sources=sources)
    except BaseException as e:
        if web is not None:
            web.close(False, [str(e) or type(e).__name__])
        raise
    finally:
        table.close()
    if web is not None:
        web.finish(result)
    if args.json:
        print(json.dumps(result_json(result), indent=2))
        print(f"ka: node reports in {result.logs}/", file=sys.stderr)
    else:
        print(summary(result))
        for done in switched:
            print("\n".join(describe_switch(done)))
    for done in switched:
        for warning in done.warnings:
            print(printable(f"ka: warning: {warning}"), file=sys.stderr)
    return 0 if result.ok else 1


def _preflight(args: argparse.Namespace, plan: ClonePlan, settings: SessionSettings,
               stage2: bool) -> None:
    """The checks of `ka doctor --golden`, with this clone's own ports: a port taken, a key
    or an interface that cannot work stop it before any session starts."""
    from ka.doctor.roles import Options, golden, require

    blocks = WAVES if args.serve else 0
    last = plan.session_port(plan.sessions[-1], settings.port) + blocks * (len(plan.sessions) - 1)
    found = golden(Options(role="golden", port=settings.port, sessions=last - settings.port + 1,
                           stage2_port=args.stage2_port if stage2 else 0,
                           key_file=args.key_file, identity=args.identity, bind=args.bind))
    if args.image is not None:  # an image is sent as stored: no tar, no disk tools
        found = [c for c in found if c.kind != "tool"]
    require("golden", found)


def _image_plan(args: argparse.Namespace, key: bytes | None) -> tuple[Path, Any, ClonePlan]:
    """The plan and stream sources of `--image`, once the image has passed every check
    (manifest, its MAC, every stream file's size and hash): nothing of a damaged image
    is ever sent."""
    from ka.image.deploy import Deployment, image_plan
    from ka.image.store import open_image

    for dest, flag, default in SELECTION:
        if getattr(args, dest) != default:
            raise UsageError(f"{flag} has no meaning with --image: the image was captured "
                             "with its own selection",
                             hint="give it to `ka image capture` instead")
    print(f"ka: checking image {args.image} (every stream file's digest)", file=sys.stderr)
    directory, manifest = open_image(args.image, key, store=args.store,
                                     allow_unauthenticated=args.unauthenticated_image)
    print(f"ka: image {manifest.name}: captured {manifest.created} on "
          f"{manifest.source_host}, {len(manifest.streams)} stream file(s), "
          f"{manifest.stored_bytes / 1e6:.1f} MB stored for {manifest.raw_bytes / 1e6:.1f} MB"
          + ("" if manifest.authenticated else ", not authenticated"), file=sys.stderr)
    plan = image_plan(directory, manifest, Deployment(
        prefix=args.session_prefix, nodes=args.nodes, hostnames=_hostnames(args.hostnames),
        release_delay=args.release_delay, reports_before_release=args.pxe is not None,
        bootloader=_bootloader(args.bootloader) if args.bootloader else None))
    return directory, manifest, plan


# --- ka install -----------------------------------------------------------------------------


def cmd_install(args: argparse.Namespace) -> int:
    opts = InstallOptions(
        prefix=args.session_prefix,
        host=args.host,
        port=args.port,
        key=key_from_args(args),
        golden_key=golden_key_from_args(args),
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
        return report.exit_status or 1
    print(f"ka: [{report.node}] installed in {report.seconds:.1f} s", file=sys.stderr)
    return 0


# --- ka console -----------------------------------------------------------------------------


def cmd_console(args: argparse.Namespace) -> int:
    host, port = args.node, args.port
    if host.count(":") == 1:
        host, _, text = host.partition(":")
        if not text.isdigit():
            raise UsageError(f"{args.node}: expected ADDR or ADDR:PORT")
        port = int(text)
    key = key_from_args(args)
    if args.exec is not None and key is None:
        raise UsageError("--exec needs a session key (--key-file)",
                         hint="a node never runs a command for a console without its key")
    reply = console(host, port, key, lambda line: print(printable(line), flush=True),
                    exec_argv=args.exec, connect_timeout=args.connect_timeout)
    if reply is None:
        return 0
    if reply.refused is not None:
        raise UsageError(f"{args.node} refused to run the command: {reply.refused}")
    sys.stdout.write(reply.stdout)
    sys.stderr.write(reply.stderr)
    return reply.status or 0
