"""`ka doctor [--golden | --node | --pxe]`: what this machine lacks for a role."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ka.boot.init_script import STAGE2_PORT
from ka.boot.loaders import BIOS_LOADERS, UEFI_LOADERS
from ka.doctor.roles import (
    DEFAULT_SESSIONS,
    ROLES,
    WHAT,
    Options,
    PreflightFailed,
    Role,
    line,
    preflight,
    verdict,
)
from ka.keys import add_golden_key_option, add_identity_option, add_key_option
from ka.options import add_port_option

EPILOG = """\
One line per check: ok, missing (the role cannot work without it) or warning (ka may work,
but see the hint). Checks: the programs ka runs in that role (with the Debian package of
each), the kernel's support for the filesystems a node mounts (of --desc's layouts, or the
usual ones), the ports ka listens on (--golden: the sessions' and stage2's, which booting
nodes ask for; free, or taken and by which process: all of them are named only when run as
root), the key file (readable by others is a warning), the golden identity (--golden) or
its pinned public key (--node), the disks (a node needs one that nothing has mounted), the
interface the nodes reach, and root.
Nothing is changed and nothing is sent. Exit status: 0 when nothing is missing, 5 otherwise
(as ka clone and ka pxe serve, which run the same checks first).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("doctor", help="preflight: what this machine lacks for a role",
                       description="Check this machine for the golden node, a node or the "
                                   "boot server, and say what is missing and how to fix it.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    role = d.add_mutually_exclusive_group()
    for name in ROLES:
        role.add_argument(f"--{name}", dest="role", action="store_const", const=name,
                          help=f"check for {WHAT[name]}" + (" (the default)"
                                                             if name == "golden" else ""))
    add_key_option(d)
    add_identity_option(d)
    add_golden_key_option(d)
    add_port_option(d, "the --port of ka clone / ka install")
    d.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS, metavar="N",
                   help=f"--golden: how many ports from P to check ({DEFAULT_SESSIONS})")
    d.add_argument("--stage2-port", type=int, default=STAGE2_PORT, metavar="P",
                   help=f"--golden: the --stage2-port of ka clone ({STAGE2_PORT}; 0: stage2 "
                        "not served)")
    d.add_argument("--status-port", type=int, default=None, metavar="P",
                   help="--node: the --status-port of ka install (30760; 0: off)")
    d.add_argument("--bind", metavar="ADDR",
                   help="the address the nodes reach (default: the interface of the "
                        "default route)")
    d.add_argument("--desc", action="append", default=[], metavar="FILE",
                   help="--node: a layout the node will get; its filesystems are checked")
    d.add_argument("--bios", choices=BIOS_LOADERS, default="pxelinux",
                   help="--pxe: the BIOS loader of ka pxe config (pxelinux)")
    d.add_argument("--uefi", choices=UEFI_LOADERS, default="grub",
                   help="--pxe: the UEFI loader of ka pxe config (grub)")
    d.add_argument("--json", action="store_true", help="print the checks as JSON")
    d.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    role: Role = args.role or "golden"
    options = Options(role=role, port=args.port, sessions=max(1, args.sessions),
                      key_file=args.key_file, identity=args.identity,
                      golden_key=args.golden_key, bind=args.bind,
                      stage2_port=args.stage2_port, desc=tuple(args.desc),
                      bios=args.bios, uefi=args.uefi)
    if args.status_port is not None:
        options = dataclasses.replace(options, status_port=args.status_port)
    found = preflight(options)
    works = not any(c.status == "missing" for c in found)
    if args.json:
        json.dump({"role": role, "works": works,
                   "checks": [dataclasses.asdict(c) for c in found]}, sys.stdout, indent=2)
        print()
    else:
        for c in found:
            print(line(c))
        print(verdict(role, found))
    return 0 if works else PreflightFailed.exit_code

