"""`ka lab clone`: the command line of the lab clone, on namespaces or virtual machines."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from ka.errors import KaError, UsageError
from ka.lab.clone import GiB, LabCloneOptions, MiB, lab_clone
from ka.lab.debian import DEFAULT_CACHE
from ka.lab.report import LabCloneReport, summary_table
from ka.signals import sigterm_interrupts
from ka.sizes import size_argument


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    _register_debian(subparsers)
    p = subparsers.add_parser(
        "clone", help="clone a golden disk onto N lab nodes, verify every clone, tear down",
        description=(
            "Build a lab network and a golden disk (GPT: ESP vfat, / ext4, /var xfs, swap) "
            "holding a tree with every kind of file a clone must keep; run `ka clone` on the "
            "golden node and `ka install` on N nodes with blank disks; verify every clone "
            "(tree digest with metadata, partition table, fstab UUIDs, machine-ids, host "
            "names); print a summary; remove everything."))
    p.add_argument("--nodes", "-n", type=int, default=3, metavar="N", help="nodes (default 3)")
    p.add_argument("--rate", default="1gbit", metavar="RATE",
                   help="link rate: 100mbit, 1gbit or none (default 1gbit)")
    p.add_argument("--size", type=size_argument, default=1 * GiB, metavar="SIZE",
                   help="size of every disk (default 1GiB; a plain number is MiB)")
    p.add_argument("--data", type=size_argument, default=128 * MiB, metavar="SIZE",
                   help="file data in the golden tree (default 128MiB)")
    p.add_argument("--exclude", "-x", action="append", default=[], metavar="DIR",
                   help="directory of the golden tree not to clone (repeatable)")
    p.add_argument("--compress", metavar="zstd[:LEVEL]", help="compress the streams")
    p.add_argument("--image", action="store_true",
                   help="capture the golden disk into an image (`ka image capture`), detach and "
                        "delete the golden disk, then deploy the image (`ka clone --image`)")
    p.add_argument("--serve", action="store_true",
                   help="with --image: deploy with `ka clone --serve --until N`, the last node "
                        "arriving only once the first wave's filesystem session has started")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (disk images, logs) for inspection")
    p.add_argument("--web", type=_port, metavar="PORT",
                   help="run `ka clone --web` and show its dashboard at "
                        "http://127.0.0.1:PORT/ of this machine; once the clone is verified "
                        "the run's history stays there until Ctrl-C")
    vm = p.add_argument_group(
        "virtual machines (--vm)",
        "With --vm N the nodes are N QEMU machines instead of namespaces: the golden disk holds "
        "a small bootable Debian (debootstrap, cached in --cache); the golden host runs ka "
        "bootenv build, ka pxe config/serve (dnsmasq) and ka clone --pxe; the machines PXE-boot "
        "the boot environment, get installed, reboot from their own disk and print their host "
        "name and machine-id on their serial console, which is what is verified.")
    vm.add_argument("--vm", type=int, metavar="N",
                    help="clone onto N virtual machines (instead of --nodes and --data)")
    vm.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="QEMU accelerator: KVM when it works here (auto, the default) or TCG")
    vm.add_argument("--firmware", choices=("bios", "uefi", "both"), default="both",
                    help="what the machines boot by: SeaBIOS, OVMF (UEFI), or both (odd "
                         "machines BIOS, even ones UEFI; the default)")
    vm.add_argument("--memory", type=int, default=1024, metavar="MiB",
                    help="memory of every machine (default 1024)")
    vm.add_argument("--cache", type=Path, default=DEFAULT_CACHE, metavar="DIR",
                    help=f"where the golden Debian archive is kept (default {DEFAULT_CACHE})")
    vm.add_argument("--mirror", metavar="URL",
                    help="Debian mirror for debootstrap (default: the one apt uses)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key", dest="key", action="store_true", default=True,
                     help="run the sessions with a session key (default)")
    key.add_argument("--no-key", dest="key", action="store_false", help="run open sessions")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    # A SIGTERM tears the lab down like Ctrl-C does.
    with sigterm_interrupts():
        return _handler(args)


def _handler(args: argparse.Namespace) -> int:
    if args.vm is not None:
        if args.image:
            raise UsageError("--image is for namespace nodes, not with --vm")
        if args.web is not None:
            raise UsageError("--web is for namespace nodes, not with --vm")
        return _vm_handler(args)
    options = LabCloneOptions(
        nodes=args.nodes, rate=None if args.rate == "none" else args.rate, size=args.size,
        data_bytes=args.data, key=args.key, keep=args.keep, excludes=tuple(args.exclude),
        compress=args.compress, image=args.image or args.serve, serve=args.serve,
        late_node=args.nodes if args.serve and args.nodes > 1 else None, web=args.web)
    if options.data_bytes > options.size // 2:
        raise UsageError("the golden tree's data does not fit the disk",
                         hint="give a larger --size or a smaller --data")
    shown: list[LabCloneReport] = []

    def hold(report: LabCloneReport) -> None:
        print(summary_table(report), flush=True)
        shown.append(report)
        print("ka lab clone: the dashboard shows the run's history until Ctrl-C",
              file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)

    report = lab_clone(options, on_step=lambda msg: print(f"ka lab clone: {msg}", flush=True),
                       on_dashboard=lambda url: print(f"ka: dashboard at {url}",
                                                      file=sys.stderr, flush=True),
                       hold=hold)
    if not shown:
        print(summary_table(report))
    return 0 if report.ok else 1


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r}: a number from 0 to 65535")
    return int(text)



def _vm_handler(args: argparse.Namespace) -> int:
    from ka.lab.vmclone import VmCloneOptions, lab_clone_vm, vm_summary

    if not args.key:
        raise UsageError("--vm runs with a session key only: the key is baked into the boot "
                         "environment, as the documentation recommends")
    options = VmCloneOptions(
        machines=args.vm, size=args.size, memory_mib=args.memory, firmware=args.firmware,
        rate=None if args.rate == "none" else args.rate, accel=args.accel, cache=args.cache,
        mirror=args.mirror, keep=args.keep)
    report = lab_clone_vm(options, on_step=lambda m: print(f"ka lab clone: {m}", flush=True))
    print(vm_summary(report))
    return 0 if report.ok else 1


def _register_debian(subparsers: argparse._SubParsersAction[Any]) -> None:
    d = subparsers.add_parser(
        "debian", help="build (once) the golden Debian of `ka lab clone --vm`",
        description=(
            "Build the small bootable Debian that `ka lab clone --vm` clones (debootstrap from "
            "the Debian mirror apt uses: a kernel, GRUB for BIOS and UEFI, systemd) and keep it "
            "as an archive in --cache; print the archive's path. Nothing is done when it is "
            "cached already. Needs root and the Debian mirror."))
    d.add_argument("--cache", type=Path, default=DEFAULT_CACHE, metavar="DIR",
                   help=f"where the archive is kept (default {DEFAULT_CACHE})")
    d.add_argument("--mirror", metavar="URL",
                   help="Debian mirror for debootstrap (default: the one apt uses)")
    d.add_argument("--suite", metavar="NAME",
                   help="Debian release (default: this machine's)")
    d.set_defaults(func=_debian)


def _debian(args: argparse.Namespace) -> int:
    from ka.lab.debian import DebianRecipe, golden_archive, host_mirror, host_suite

    if os.geteuid() != 0:
        raise KaError("building the golden Debian needs root (debootstrap, chroot)",
                      hint="run it as root, e.g. with sudo")
    recipe = DebianRecipe(args.suite or host_suite(), args.mirror or host_mirror())
    archive = golden_archive(recipe, args.cache,
                             lambda m: print(f"ka lab debian: {m}", flush=True))
    print(archive)
    return 0
