"""`ka send` and `ka receive`: the transport command line (the only part that prints)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ka.errors import UsageError
from ka.keys import (
    add_golden_key_option,
    add_identity_option,
    add_key_option,
    golden_key_from_args,
    identity_from_args,
    key_from_args,
)
from ka.options import add_port_option
from ka.sizes import size_argument
from ka.transport.chunking import AUTO_MIN, LAG_SHARE
from ka.transport.endpoints import CommandSink, CommandSource, FileSink, FileSource, Sink, Source
from ka.transport.options import (
    CHUNK_SIZE,
    Event,
    ReceiveOptions,
    SendOptions,
    SessionReport,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("send", help="broadcast a command's output (or a file) to N nodes",
                       description="Broadcast one producer's stream to N nodes through a "
                                   "self-healing TCP chain (or tree).")
    s.add_argument("--nodes", "-n", type=int, required=True, help="wait for this many nodes")
    s.add_argument("--session", "-s", help="answer UDP discovery for this session name")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--command", "-e", help="producer command (run with sh -c); its stdout")
    src.add_argument("--input", help="file or block device to send")
    s.add_argument("--arity", "-a", type=int, default=1, help="sons per node (1 = chain)")
    add_key_option(s)
    add_identity_option(s)
    s.add_argument("--compress", help="zstd or zstd:LEVEL: compress once on the sender")
    s.add_argument("--no-encrypt", action="store_true",
                   help="with a key, still send the payload in clear (authenticated only)")
    s.add_argument("--release-delay", "-d", type=int, metavar="TENTHS",
                   help="release --wait-release nodes one every TENTHS/10 s")
    s.add_argument("--min-nodes", type=int, help="with --wait-timeout: start with at least M")
    s.add_argument("--wait-timeout", type=float, metavar="S", help="stop waiting after S s")
    s.add_argument("--stall-timeout", type=float, default=5.0, metavar="S",
                   help="evict a node without progress for S s (default 5)")
    s.add_argument("--ring-size", type=size_argument, default=32 * 1024**2,
                   help="retention per node, e.g. 32MiB (the default; a plain number is MiB): the "
                        "memory each node uses")
    s.add_argument("--chunk-size", type=size_argument, metavar="SIZE",
                   help="bytes per frame, 4K to 4M; every hop holds a whole chunk before "
                        "passing it on (default: sized so that the last node ends at most "
                        f"{LAG_SHARE * 100:g} %% of the stream's time after the first, "
                        f"{AUTO_MIN // 1024}K to {CHUNK_SIZE // 1024}K; docs/transport.md)")
    s.add_argument("--keep-stragglers", action="store_true",
                   help="leave a node much slower than its parent where it is in the chain "
                        "(default: move it to the tail once; see docs/transport.md)")
    s.add_argument("--order", help="explicit node order: comma-separated addresses or names")
    add_port_option(s, "TCP control and UDP port")
    s.add_argument("--bind", default="0.0.0.0", help="local address to listen on")
    s.add_argument("--report", metavar="FILE.json", help="write the final report as JSON")
    s.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    s.set_defaults(func=run_send)

    r = sub.add_parser("receive", help="take a broadcast stream into a command (or a file)",
                       description="Join a session, feed the stream to a consumer, and relay "
                                   "it to the next nodes.")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--session", "-s", help="find the sender by this session name (UDP)")
    where.add_argument("--host", "-H", help="the sender's address")
    dst = r.add_mutually_exclusive_group()
    dst.add_argument("--command", "-e", help="consumer command (run with sh -c); its stdin")
    dst.add_argument("--output", help="file or block device to write")
    add_key_option(r)
    add_golden_key_option(r)
    r.add_argument("--wait-release", "-w", action="store_true",
                   help="after finishing, wait for the sender's release")
    r.add_argument("--go-now", "-g", action="store_true",
                   help="tell the sender to start now with the nodes it has; alone, exit "
                        "at once (takes no data), with --command/--output join as a node too")
    r.add_argument("--find-timeout", type=float, default=30.0, metavar="S",
                   help="look for the sender this long (default 30)")
    add_port_option(r, "the sender's port")
    r.add_argument("--name", help="name reported to the sender (default: host name)")
    r.add_argument("--discovery-address", default="255.255.255.255",
                   help="where to send discovery requests (default: LAN broadcast)")
    r.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    r.set_defaults(func=run_receive)


# Each command imports only its own side (and the view once it has its options): a node's
# `ka receive` is started right before a session and looks for it as soon as it can.


def run_send(args: argparse.Namespace) -> int:
    from ka.transport.sender import send
    from ka.transport.view import EventView

    source: Source = CommandSource(args.command) if args.command else FileSource(args.input)
    if (args.min_nodes is None) != (args.wait_timeout is None) and args.min_nodes is not None:
        raise UsageError("--min-nodes needs --wait-timeout")
    options = SendOptions(
        nodes=args.nodes, session=args.session, port=args.port, arity=args.arity,
        key=key_from_args(args), identity=identity_from_args(args), compress=args.compress,
        release_delay=args.release_delay / 10 if args.release_delay is not None else None,
        min_nodes=args.min_nodes, wait_timeout=args.wait_timeout,
        stall_timeout=args.stall_timeout, ring_size=args.ring_size, chunk_size=args.chunk_size,
        move_stragglers=not args.keep_stragglers,
        node_order=tuple(x.strip() for x in args.order.split(",") if x.strip())
        if args.order else None,
        bind=args.bind, encrypt=False if args.no_encrypt else None,
    )
    if args.report:
        check_writable(args.report)
    view = EventView(json_mode=args.json, role="send")
    with view:
        report = send(source, options, view.event)
    view.summary(report)
    if args.report:
        write_report(args.report, report)
    return 0 if report.ok else 1


def check_writable(path: str) -> None:
    """Before the session, so a typo does not lose the report of a whole broadcast."""
    folder = Path(path).parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write the report {path}: {folder} is not a writable folder")


def write_report(path: str, report: SessionReport) -> None:
    try:
        Path(path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write the report {path}: {e.strerror}") from e


def run_receive(args: argparse.Namespace) -> int:
    from ka.transport.receiver import receive
    from ka.transport.view import EventView

    sink: Sink
    if args.command:
        sink = CommandSink(args.command)
    elif args.output:
        sink = FileSink(args.output)
    elif args.go_now:
        sink = Sink()
    else:
        raise UsageError("give --command or --output (or --go-now)")
    only_go = args.go_now and not (args.command or args.output)
    options = ReceiveOptions(
        session=args.session, host=args.host, port=args.port, key=key_from_args(args),
        golden_key=golden_key_from_args(args),
        wait_release=args.wait_release, go_now=only_go, start_now=args.go_now and not only_go,
        find_timeout=args.find_timeout,
        name=args.name or os.uname().nodename, discovery_address=args.discovery_address,
    )
    view = EventView(json_mode=args.json, role="receive")
    report = receive(sink, options, view.event)
    if only_go:
        return 0
    final: dict[str, Any] = {
        "bytes": report.bytes, "seconds": round(report.seconds, 3), "digest": report.digest,
        "consumer_status": report.consumer_status, "position": report.position,
        "sender": report.sender,
    }
    if args.json:
        view.event(Event("complete", "stream received and verified", data=final))
    else:
        mb = report.bytes / 1e6
        rate = mb / report.seconds if report.seconds > 0 else 0.0
        print(f"ka: received {mb:.1f} MB in {report.seconds:.2f} s ({rate:.1f} MB/s), "
              f"digest {report.digest[:16]}… verified, consumer exit 0", file=sys.stderr)
    return 0
