"""`ka pxe config|set|show|serve` and `ka bootenv build`: network boot of blank nodes."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from ka.boot import serve as pxe_serve
from ka.boot.cmdline import DEFAULT_CONSOLES, DEFAULT_RETRIES, BootOptions
from ka.boot.loaders import BIOS_LOADERS, UEFI_LOADERS
from ka.boot.menus import ENTRIES, STAGE2
from ka.boot.nodes import NodeEntry, parse_nodes
from ka.boot.pxe import (
    DNSMASQ_CONF,
    STATE_FILE,
    PxeConfig,
    describe_tree,
    parse_range,
    plan_tree,
    render_dnsmasq,
)
from ka.boot.state import load_state, save_state, write_tree
from ka.boot.switch import boot_states, carry_over, check_entry, set_boot
from ka.errors import UsageError
from ka.options import add_group
from ka.signals import sigterm_interrupts

DEFAULT_DIR = "/var/lib/ka/pxe"

PXE_DESCRIPTION = """\
Network boot of blank nodes with dnsmasq (DHCP or proxy-DHCP, and TFTP). Every boot loader
(pxelinux or iPXE for BIOS, GRUB or iPXE for UEFI) offers two entries: "ka" boots the ka boot
environment, which installs the node, and "local" boots the node's own disk. `ka pxe set`
switches nodes between them. State lives in --dir (default /var/lib/ka/pxe)."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    _pxe, sub = add_group(subparsers, "pxe",
                          help="network boot: dnsmasq, boot loaders, ka or local",
                          description=PXE_DESCRIPTION,
                          formatter_class=argparse.RawDescriptionHelpFormatter)

    config = sub.add_parser("config", help="write the dnsmasq configuration and the TFTP tree",
                            description="Write DIR/dnsmasq.conf and the TFTP tree.")
    config.add_argument("--interface", "-i", required=True, metavar="IF",
                        help="the interface on the deployment network")
    mode = config.add_mutually_exclusive_group(required=True)
    mode.add_argument("--range", metavar="FIRST,LAST", help="full DHCP: hand out these addresses")
    mode.add_argument("--proxy-dhcp", nargs="?", const="auto", metavar="NET/PREFIX",
                      help="proxy-DHCP beside an existing DHCP server (subnet: the interface's)")
    mode.add_argument("--tftp-only", action="store_true",
                      help="TFTP only; your DHCP server points nodes here")
    _dir_option(config)
    config.add_argument("--tftp-root", metavar="DIR", help="TFTP root (default: DIR/tftp)")
    config.add_argument("--bios", choices=BIOS_LOADERS, default="pxelinux",
                        help="boot loader for BIOS nodes (default: pxelinux)")
    config.add_argument("--uefi", choices=UEFI_LOADERS, default="grub",
                        help="boot loader for UEFI x86-64 nodes (default: grub)")
    where = config.add_mutually_exclusive_group()
    where.add_argument("--session", metavar="NAME",
                       help="nodes find the golden node by this session name (ka.session=)")
    where.add_argument("--host", metavar="ADDR",
                       help="nodes contact this golden node address (ka.host=); default: the "
                            "DHCP next-server")
    config.add_argument("--key-url", metavar="URL",
                        help="nodes fetch the session key from here (ka.key_url=); see "
                             "docs/boot.md for what this trusts")
    config.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                        help=f"install attempts before a node reboots (default {DEFAULT_RETRIES})")
    config.add_argument("--disk", action="append", default=[], metavar="GOLDEN=LOCAL",
                        help="disk map passed to ka install (repeatable)")
    config.add_argument("--console", action="append", metavar="DEV",
                        help=f"kernel console (repeatable; default {' '.join(DEFAULT_CONSOLES)})")
    config.add_argument("--append", action="append", default=[], metavar="PARAM",
                        help="extra kernel parameter (repeatable)")
    config.add_argument("--default", choices=ENTRIES, default="ka",
                        help="what nodes without their own menu boot (default: ka)")
    config.add_argument("--nodes", metavar="FILE", help="node table: lines of MAC [IP] [NAME]")
    config.add_argument("--bootenv", metavar="DIR",
                        help="copy vmlinuz and initrd.img from here (ka bootenv build --output)")
    config.add_argument("--dry-run", action="store_true",
                        help="print the dnsmasq configuration and the tree; write nothing")
    config.set_defaults(func=_config)

    set_ = sub.add_parser("set", help="switch nodes (or all) to boot ka or the local disk",
                          description="ka pxe set (NODE...|all) ka|local. NODE is a MAC, or an "
                                      "IP or name from the node table.")
    set_.add_argument("words", nargs="+", metavar="NODE... ENTRY")
    _dir_option(set_)
    set_.set_defaults(func=_set)

    show = sub.add_parser("show", help="show the default and every node's boot entry")
    _dir_option(show)
    show.set_defaults(func=_show)

    serve = sub.add_parser("serve", help="run dnsmasq in the foreground with the configuration")
    _dir_option(serve)
    serve.add_argument("--no-preflight", action="store_true",
                       help="skip the checks of `ka doctor --pxe` made before dnsmasq starts "
                            "(dnsmasq, the DHCP and TFTP ports, root)")
    serve.set_defaults(func=_serve)

    from ka.boot import bootenv_cli

    bootenv_cli.register(subparsers)



def _dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                        help=f"PXE state directory (default {DEFAULT_DIR})")


def _config(args: argparse.Namespace) -> int:
    boot = BootOptions(session=args.session, host=args.host, retries=args.retries,
                       key_url=args.key_url, disks=tuple(args.disk),
                       consoles=tuple(args.console) if args.console else DEFAULT_CONSOLES,
                       extra=tuple(args.append))
    nodes: tuple[NodeEntry, ...] = ()
    if args.nodes:
        try:
            with open(args.nodes) as f:
                nodes = parse_nodes(f.read(), args.nodes)
        except OSError as e:
            raise UsageError(f"cannot read node table {args.nodes}: {e.strerror}") from e
    subnet = None
    if args.proxy_dhcp == "auto":
        addresses = pxe_serve.interface_addresses(args.interface)
        if not addresses:
            raise UsageError(f"interface {args.interface} has no IPv4 address to take the "
                             "proxy-DHCP subnet from", hint="give --proxy-dhcp NET/PREFIX")
        subnet = str(addresses[0].network)
    elif args.proxy_dhcp:
        subnet = args.proxy_dhcp
    state_dir = os.path.abspath(args.dir)
    config = PxeConfig(
        interface=args.interface, state_dir=state_dir,
        tftp_root=os.path.abspath(args.tftp_root or os.path.join(state_dir, "tftp")),
        dhcp="range" if args.range else "proxy" if args.proxy_dhcp else "tftp-only",
        range=parse_range(args.range) if args.range else None, subnet=subnet,
        bios=args.bios, uefi=args.uefi, boot=boot, default=args.default, nodes=nodes)
    tree = plan_tree(config, os.path.abspath(args.bootenv) if args.bootenv else None)
    if args.dry_run:
        print(f"# {os.path.join(state_dir, DNSMASQ_CONF)}")
        print(render_dnsmasq(config))
        print(f"# TFTP tree in {config.tftp_root}")
        print(describe_tree(tree))
        return 0
    previous = None
    if os.path.isfile(os.path.join(state_dir, STATE_FILE)):
        previous = load_state(state_dir)
    write_tree(config.tftp_root, tree)
    stale = os.path.join(config.tftp_root, STAGE2)
    if args.bootenv and not any(e.target == STAGE2 for e in tree) and os.path.exists(stale):
        os.unlink(stale)  # a --single boot environment: an old stage2 must not be served
    if previous is not None:
        kept = carry_over(previous, config)
        if kept:
            print(f"ka pxe: kept the boot entry of {len(kept)} node(s) with their own menu")
    save_state(config)
    print(f"ka pxe: wrote {os.path.join(state_dir, DNSMASQ_CONF)} and the TFTP tree in "
          f"{config.tftp_root}")
    if not os.path.isfile(os.path.join(config.tftp_root, "ka", "initrd.img")):
        print(f"ka pxe: warning: no boot environment yet; build it with: ka bootenv build "
              f"--output {os.path.join(config.tftp_root, 'ka')}", file=sys.stderr)
    print(f"ka pxe: start serving with: ka pxe serve --dir {state_dir}")
    return 0


def _set(args: argparse.Namespace) -> int:
    if len(args.words) < 2:
        raise UsageError("usage: ka pxe set (NODE...|all) ka|local")
    *nodes, entry = args.words
    set_boot(load_state(os.path.abspath(args.dir)), nodes, check_entry(entry))
    target = "all nodes" if nodes == ["all"] else ", ".join(nodes)
    print(f"ka pxe: {target} now boot {entry}" + (" (default)" if nodes == ["all"] else ""))
    return 0


def _show(args: argparse.Namespace) -> int:
    config = load_state(os.path.abspath(args.dir))
    names = {n.mac: n for n in config.nodes}
    print(f"default: {config.default}")
    for mac, entry in boot_states(config).items():
        node = names.get(mac)
        label = " ".join(w for w in (node.ip, node.name) if w) if node else ""
        print(f"{mac}  {entry}" + (f"  ({label})" if label else ""))
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = load_state(os.path.abspath(args.dir))
    if not args.no_preflight:
        from ka.doctor.roles import pxe_serve as serving
        from ka.doctor.roles import require

        require("pxe", serving(dhcp=config.dhcp != "tftp-only"))
    proc = pxe_serve.start(config)
    print(f"ka pxe: dnsmasq (pid {proc.pid}) serving on {config.interface}; Ctrl-C stops it",
          file=sys.stderr)

    try:
        with sigterm_interrupts():
            status = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
    # dnsmasq ends with status 0 on SIGTERM; anything else is its own failure.
    return 0 if status in (0, -signal.SIGTERM) else 1
