"""`ka bootenv build`: the kernel and initramfs that nodes boot from `ka pxe`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ka.boot import bootenv
from ka.keys import read_golden_key


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    env = subparsers.add_parser(
        "bootenv", help="build the boot environment (kernel + initramfs running ka install)",
        description="Build, from this machine's packages, a kernel and an initramfs that bring "
                    "up the network by DHCP, run ka install (ka.session=, ka.host=, ka.retries= "
                    "from the kernel command line), and reboot.")
    env.set_defaults(func=lambda args: _help(env))
    sub = env.add_subparsers(dest="bootenv_command", metavar="BOOTENV_COMMAND")
    build = sub.add_parser("build", help="write DIR/vmlinuz and DIR/initrd.img")
    build.add_argument("--output", "-o", required=True, metavar="DIR",
                       help="where to write vmlinuz and initrd.img (e.g. TFTP_ROOT/ka)")
    build.add_argument("--kernel", metavar="PATH",
                       help="kernel image (default: the newest /boot/vmlinuz-* with modules)")
    build.add_argument("--modules", metavar="DIR",
                       help="its modules, /lib/modules/VERSION (default: from the kernel's name)")
    build.add_argument("--key-file", metavar="FILE",
                       help="bake this session key into the initramfs (see docs/boot.md)")
    build.add_argument("--golden-key", metavar="PUB|FILE",
                       help="pin the golden identity's public key (golden.pub of `ka keygen "
                            "--identity`): the nodes accept only what the golden node signed, "
                            "whoever else read the session key from the boot files")
    build.add_argument("--tool", action="append", default=[], metavar="PROGRAM",
                       help="another program to include (repeatable)")
    build.add_argument("--no-compress", action="store_true", help="write an uncompressed cpio")
    build.set_defaults(func=_build)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _build(args: argparse.Namespace) -> int:
    report = bootenv.build(os.path.abspath(args.output), kernel=args.kernel,
                           modules_dir=args.modules, key_file=args.key_file,
                           tools=tuple(args.tool), compress=not args.no_compress,
                           golden_key=read_golden_key(args.golden_key) if args.golden_key
                           else None)
    print(f"ka bootenv: {report.kernel}")
    print(f"ka bootenv: {report.initrd} ({report.initrd_bytes / 2**20:.1f} MiB, "
          f"{report.entries} files, Python {report.python}, {len(report.modules)} modules)")
    if report.missing_modules:
        print(f"ka bootenv: not in this kernel: {' '.join(report.missing_modules)}")
    if report.missing_tools:
        print(f"ka bootenv: not installed here, left out: {' '.join(report.missing_tools)}")
    if args.key_file and not args.golden_key:
        print("ka bootenv: the initramfs holds the session key: anyone who reads the boot "
              "files can pose as the golden node; pin its identity with --golden-key")
    elif args.key_file:
        print("ka bootenv: the initramfs holds the session key (who reads the boot files may "
              "join) and the golden's public key (only the golden node is obeyed)")
    return 0
