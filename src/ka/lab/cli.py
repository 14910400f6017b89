"""`ka lab up|exec|status|down`: a virtual cluster network on this machine."""

from __future__ import annotations

import argparse
import importlib
import json
import os
from typing import Any

from ka.errors import KaError, UsageError
from ka.lab import state
from ka.lab.network import (
    NAME_PATTERN,
    NAMESPACE_PREFIX,
    LabNetwork,
    TokenBucket,
    existing_namespaces,
)
from ka.options import add_group
from ka.run import spawn

DEFAULT_NAME = "lab"

LAB_DESCRIPTION = """\
A virtual cluster network on this machine: host 0 (the golden node) and nodes 1..N, each a
network namespace whose eth0 is plugged into a private switch (a Linux bridge in a namespace
of its own, with no uplink), addressed in 10.254.X.0/24 and shaped both ways to --rate.
Nothing sent inside the lab can reach any other network. State is kept in /run/ka/lab/."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    _lab, lab_subparsers = add_group(
        subparsers,
        "lab",
        help="build and use a virtual cluster network (network namespaces)",
        description=LAB_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    up = lab_subparsers.add_parser(
        "up",
        help="build a lab of N nodes plus the golden node",
        description="Build a lab: the golden node (host 0) and N nodes on a private switch.",
    )
    up.add_argument("--nodes", "-n", type=int, required=True, metavar="N", help="number of nodes")
    up.add_argument(
        "--rate",
        default="1gbit",
        metavar="RATE",
        help="link rate of every port, both ways: e.g. 10mbit, 100mbit, 1gbit, or none "
        "(default: 1gbit)",
    )
    _name_option(up, "name of the lab (default: lab); several labs can be up at once")
    up.add_argument("--json", action="store_true", help="print the lab as JSON")
    up.set_defaults(func=_up)

    exec_ = lab_subparsers.add_parser(
        "exec",
        help="run a command on a lab node",
        description=(
            "Run CMD inside the network namespace of lab node NODE (golden, node1..nodeN, or "
            "0..N) with this terminal's input and output; exits with CMD's status. Note: every "
            "command runs in a fresh mount namespace, so mounts made by it vanish when it exits."
        ),
        usage="ka lab exec [--name NAME] NODE -- CMD [ARG...]",
    )
    _name_option(exec_, "the lab to use (default: the only lab up, or 'lab')")
    exec_.add_argument("node", metavar="NODE", help="golden, node1..nodeN, or 0..N")
    exec_.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and arguments")
    exec_.set_defaults(func=_exec)

    status = lab_subparsers.add_parser(
        "status",
        help="show the labs that are up",
        description="Show every lab that is up (or the one named), its hosts and addresses.",
    )
    status.add_argument("--name", metavar="NAME", help="show only this lab")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    down = lab_subparsers.add_parser(
        "down",
        help="remove a lab and everything in it",
        description=(
            "Remove a lab: end the processes running on its nodes and delete its namespaces, "
            "veth pairs and switch. Also cleans up a lab whose state file was lost."
        ),
    )
    _name_option(down, "the lab to remove (default: the only lab up, or 'lab')")
    down.set_defaults(func=_down)

    # `ka lab clone` lives in its own module; the lab network works without it.
    try:
        lab_clone = importlib.import_module("ka.lab.clone_cli")
    except ModuleNotFoundError as e:
        if e.name not in ("ka.lab.clone", "ka.lab.clone_cli"):
            raise
    else:
        lab_clone.register(lab_subparsers)


def _name_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--name", metavar="NAME", help=help_text)



def require_root() -> None:
    if os.geteuid() != 0:
        raise KaError(
            "the lab needs root (it creates network namespaces and links)",
            hint="run it as root, e.g. with sudo",
        )


def resolve_name(name: str | None) -> str:
    """The lab a command means: --name, else the only lab up, else 'lab'."""
    if name is not None:
        if not NAME_PATTERN.match(name):
            raise UsageError(f"bad lab name {name!r}")
        return name
    labs = state.recorded()
    if len(labs) == 1:
        return labs[0]
    if len(labs) > 1 and DEFAULT_NAME not in labs:
        raise UsageError(
            f"several labs are up ({', '.join(labs)})", hint="choose one with --name NAME"
        )
    return DEFAULT_NAME


def _up(args: argparse.Namespace) -> int:
    require_root()
    lab = LabNetwork(args.nodes, rate=args.rate, name=args.name or DEFAULT_NAME)
    lab.up()
    try:
        state.save(lab)
    except BaseException:
        lab.down()
        raise
    if args.json:
        print(json.dumps(state.to_record(lab), indent=2))
    else:
        print(f"lab '{lab.name}' is up: {_describe_rate(lab)}")
        _print_hosts(state.to_record(lab))
        print(f"run a command on a node: ka lab exec --name {lab.name} node1 -- ip addr")
        print(f"remove it:               ka lab down --name {lab.name}")
    return 0


def _describe_rate(lab: LabNetwork) -> str:
    if lab.rate_bits is None:
        return f"{lab.nodes} nodes, links not shaped"
    bucket = TokenBucket.for_rate(lab.rate_bits)
    return (
        f"{lab.nodes} nodes, links shaped to {lab.rate} both ways "
        f"(tbf burst {bucket.burst_bytes} B, latency {bucket.latency_ms} ms)"
    )


def _print_hosts(record: dict[str, Any]) -> None:
    print(f"  {'node':<8} {'address':<16} namespace")
    for host in record["hosts"]:
        print(f"  {host['label']:<8} {host['address']:<16} {host['netns']}")


def _exec(args: argparse.Namespace) -> int:
    require_root()
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command given", hint="ka lab exec NODE -- CMD [ARG...]")
    lab = state.load(resolve_name(args.name))
    host = lab.host(args.node)
    if host.netns not in existing_namespaces():
        raise KaError(
            f"lab {lab.name} is recorded but its node {host.label} is gone",
            hint=f"rebuild it: ka lab down --name {lab.name}; ka lab up ...",
        )
    proc = spawn(lab.argv(host.index, cmd), stdin=None)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        raise


def _status(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else state.recorded()
    present = existing_namespaces() if os.geteuid() == 0 else None
    records = []
    for name in names:
        record = state.to_record(state.load(name))
        if present is not None:
            record["up"] = all(
                ns in present for ns in [record["switch"], *(h["netns"] for h in record["hosts"])]
            )
        records.append(record)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no lab is up (start one with: ka lab up --nodes N)")
        return 0
    for record in records:
        health = {True: "up", False: "BROKEN (some namespaces are gone)", None: "recorded"}
        rate = record["rate"] or "not shaped"
        print(
            f"lab '{record['name']}': {health[record.get('up')]}, {record['nodes']} nodes, "
            f"{record['subnet']}, links {rate}"
        )
        _print_hosts(record)
    return 0


def _down(args: argparse.Namespace) -> int:
    require_root()
    name = resolve_name(args.name)
    try:
        lab = state.load(name)
    except state.LabNotFound:
        leftover = _leftover(name)
        if leftover is None:
            raise
        lab = leftover
    lab.down()
    state.forget(name)
    print(f"lab '{name}' removed")
    return 0


def _leftover(name: str) -> LabNetwork | None:
    """A lab whose namespaces exist without a state file (e.g. `ka lab up` was killed)."""
    prefix = f"{NAMESPACE_PREFIX}{name}-"
    found = [ns[len(prefix) :] for ns in existing_namespaces() if ns.startswith(prefix)]
    suffixes = {"switch", "golden"} | {s for s in found if s.startswith("node")}
    if not found or not set(found) <= suffixes:
        return None
    counts = [int(s[4:]) for s in found if s.startswith("node") and s[4:].isdigit()]
    lab = LabNetwork(max(counts, default=1), name=name)
    lab.adopt()
    return lab
