"""`ka bootenv build`: the kernel and initramfs that nodes boot from `ka pxe`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ka.boot import bootenv
from ka.keys import read_golden_key
from ka.options import add_group


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    _env, sub = add_group(
        subparsers, "bootenv",
        help="build the boot environment (kernel, stage1 and stage2 running ka install)",
        description="Build, from this machine's packages, a kernel and a small initramfs "
                    "(stage1) that brings up the network by DHCP and receives stage2 (the rest: "
                    "Python, ka, the disk tools) through the chain from `ka clone`, then runs ka "
                    "install (ka.session=, ka.host=, ka.retries= from the kernel command line) "
                    "and reboots.")
    build = sub.add_parser(
        "build", help="write DIR/vmlinuz, DIR/initrd.img (stage1) and DIR/stage2.cpio.gz",
        description="Write DIR/vmlinuz, DIR/initrd.img (stage1: fetched by TFTP) and "
                    "DIR/stage2.cpio.gz (served by `ka clone` in the session PREFIX-stage2, "
                    "through the chain; `ka pxe config --bootenv DIR` puts it where `ka clone "
                    "--pxe` finds it).")
    build.add_argument("--output", "-o", required=True, metavar="DIR",
                       help="where to write vmlinuz and initrd.img (e.g. TFTP_ROOT/ka)")
    build.add_argument("--kernel", metavar="PATH",
                       help="kernel image (default: the newest /boot/vmlinuz-* with modules)")
    build.add_argument("--modules", metavar="DIR",
                       help="its modules, /lib/modules/VERSION (default: from the kernel's name)")
    # Not add_key_option: $KA_KEY_FILE is not read here, since a key baked into boot files
    # that anyone on the network may fetch must be asked for by name.
    build.add_argument("--key-file", metavar="FILE",
                       help="bake this session key into the initramfs (see docs/boot.md; "
                            "$KA_KEY_FILE is not read)")
    build.add_argument("--golden-key", metavar="PUB|FILE",
                       help="pin the golden identity's public key (golden.pub of `ka keygen "
                            "--identity`): the nodes accept only what the golden node signed, "
                            "whoever else read the session key from the boot files")
    build.add_argument("--tool", action="append", default=[], metavar="PROGRAM",
                       help="another program to include (repeatable)")
    build.add_argument("--no-compress", action="store_true",
                       help="write an uncompressed cpio (stage1 or --single)")
    build.add_argument("--single", action="store_true",
                       help="one initramfs holding everything, no stage2 (one-off machines: "
                            "it does not scale, TFTP carries all of it to every node)")
    build.set_defaults(func=_build)



def _build(args: argparse.Namespace) -> int:
    report = bootenv.build(os.path.abspath(args.output), kernel=args.kernel,
                           modules_dir=args.modules, key_file=args.key_file,
                           tools=tuple(args.tool), compress=not args.no_compress,
                           golden_key=read_golden_key(args.golden_key) if args.golden_key
                           else None, single=args.single)
    print(f"ka bootenv: {report.kernel}")
    stage = "" if report.stage2 is None else "stage1, by TFTP: "
    print(f"ka bootenv: {report.initrd} ({stage}{report.initrd_bytes / 2**20:.1f} MiB, "
          f"{report.entries} files, Python {report.python}, {len(report.modules)} modules)")
    if report.stage2 is not None:
        print(f"ka bootenv: {report.stage2} (stage2, through the chain: "
              f"{report.stage2_bytes / 2**20:.1f} MiB, {report.stage2_entries} files)")
        if report.initrd_bytes > bootenv.STAGE1_TARGET_BYTES:
            print(f"ka bootenv: warning: stage1 is above "
                  f"{bootenv.STAGE1_TARGET_BYTES // 2**20} MiB: every node pays it by TFTP")
    else:
        print("ka bootenv: one initramfs (--single): TFTP carries all of it to every node; "
              "for many nodes at once leave --single out")
    if not report.stripped:
        print("ka bootenv: strip (Debian package binutils) is not installed: the programs and "
              "libraries keep their symbol tables")
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
