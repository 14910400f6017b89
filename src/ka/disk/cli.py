"""`ka desc probe|check|apply`: describe disks, check a desc, apply it to a disk."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ka.disk.apply import Step, apply_plan
from ka.disk.desc import parse_desc
from ka.disk.devices import disk_size, sector_size
from ka.disk.errors import DoesNotFit
from ka.disk.layout import Layout, parse_size
from ka.disk.plan import Plan, minimum_disk_size, plan_layout
from ka.disk.probe import probe_disks
from ka.errors import KaError, UsageError
from ka.options import add_group

DESC_DESCRIPTION = """\
A desc file describes the partitions of one disk, one line per partition, in order:

    label gpt
    esp   512MiB fs=vfat mount=/boot/efi
    linux 20GiB  fs=ext4 mount=/ label=root
    swap  2GiB
    linux fill   fs=xfs  mount=/var

Files in the original ka-deploy syntax (`linux 3500`, `extended fill`, `logical swap 500`,
`logical linux fill`; sizes in MiB) still work and mean an MBR (dos) label.
See docs/desc.md for the whole language."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    _desc, sub = add_group(
        subparsers,
        "desc",
        help="partition descriptions: probe disks, check a desc, apply it to a disk",
        description=DESC_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    probe = sub.add_parser(
        "probe",
        help="print the disks of this machine (or the given ones) as desc files",
        description="Describe disks as desc files, from lsblk, sfdisk, blkid -p and findmnt. "
        "Without DISK, every disk of the machine (not loop devices). The last partition of "
        "a disk becomes `fill` when it reaches the end, so the desc fits other disk sizes.",
    )
    probe.add_argument("disks", nargs="*", metavar="DISK", help="e.g. /dev/sda /dev/nvme0n1")
    probe.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the desc to FILE (one DISK only) instead of stdout",
    )
    probe.set_defaults(func=_probe)

    check = sub.add_parser(
        "check",
        help="validate a desc file and print the resolved plan for a disk",
        description="Validate FILE. With --disk or --size, also place every partition "
        "(1 MiB aligned) and print start, size, type, filesystem and mount point in MiB and "
        "sectors, or fail when the layout does not fit. Nothing is written.",
    )
    check.add_argument("file", metavar="FILE", help="the desc file ('-' for stdin)")
    where = check.add_mutually_exclusive_group()
    where.add_argument("--disk", metavar="DEV", help="plan for this disk's size and sector size")
    where.add_argument(
        "--size",
        metavar="SIZE",
        help="plan for a disk of SIZE (e.g. 8GiB, 500GiB, 2TiB; plain = MiB)",
    )
    check.add_argument(
        "--sector-size",
        type=int,
        metavar="BYTES",
        help="logical sector size with --size: 512 (the default) or 4096",
    )
    check.set_defaults(func=_check)

    apply = sub.add_parser(
        "apply",
        help="partition, format and optionally mount a disk as a desc says",
        description="Wipe the old signatures of DISK, write the partition table with an sfdisk "
        "script, create the partition device nodes when there is no udev, create every "
        "filesystem with its label and UUID, and with --target mount the tree under DIR, "
        "parents first. Refuses a disk that holds a mounted filesystem, active swap or the "
        "running root, and a disk that is too small, before changing anything. DESTROYS "
        "everything on DISK: without --yes it asks on a terminal, and refuses otherwise.",
    )
    apply.add_argument("file", metavar="FILE", help="the desc file ('-' for stdin)")
    apply.add_argument("disk", metavar="DISK", help="the whole disk, e.g. /dev/sdb, /dev/loop0")
    apply.add_argument(
        "--target", metavar="DIR", help="mount the new filesystems under DIR (DIR/, DIR/var, ...)"
    )
    apply.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help="print every command that would run, change nothing",
    )
    apply.add_argument(
        "--yes", "-y", action="store_true", help="do not ask before destroying the contents of DISK"
    )
    apply.set_defaults(func=_apply)



def _read_layout(path: str) -> Layout:
    if path == "-":
        return parse_desc(sys.stdin.read(), "<stdin>")
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{path} is not a desc file: byte {e.start} is not UTF-8 text",
            hint="a desc is a text file, one line per partition (see docs/desc.md)",
        ) from None
    return parse_desc(text, path)


def _probe(args: argparse.Namespace) -> int:
    reports = probe_disks(args.disks or None)
    if args.output and len(reports) != 1:
        raise UsageError("--output needs exactly one DISK")
    chunks = []
    for r in reports:
        head = f"# {r.device}: {r.size // (1024 * 1024)} MiB, {r.sector_size}-byte sectors"
        if r.note:
            head += f"; {r.note}"
        chunks.append(head + "\n" + (r.layout.to_desc() if r.layout.partitions else ""))
    text = "\n".join(chunks)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            raise KaError(f"cannot write {args.output}: {e.strerror}") from e
    else:
        sys.stdout.write(text)
    if not any(r.readable for r in reports):
        # Only comments were printed: a script taking them for a desc would apply nothing.
        raise KaError(
            "no disk could be described" + (
                ": " + "; ".join(f"{r.device} {r.note}" for r in reports) if reports
                else ": this machine shows no disk"),
            hint="run as root, or name the disk: ka desc probe /dev/sda",
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    layout = _read_layout(args.file)
    sector = 512 if args.sector_size is None else args.sector_size
    if sector < 512 or sector > 65536 or sector & (sector - 1):
        raise UsageError(
            f"--sector-size {sector}: not a logical sector size",
            hint="disks have 512-byte sectors, or 4096 (4Kn)",
        )
    if args.disk:
        if args.sector_size is not None:
            raise UsageError(
                "--sector-size goes with --size; --disk reads the disk's own sector size"
            )
        size, sector = _geometry(args.disk)
    elif args.size:
        try:
            parsed = parse_size(args.size)
        except ValueError:
            raise UsageError(
                f"--size {args.size}: not a size", hint="e.g. 8GiB or 500GiB"
            ) from None
        if parsed.kind != "bytes":
            raise UsageError(f"--size {args.size}: give an absolute size", hint="e.g. 8GiB")
        size = parsed.value
    else:
        try:
            smallest = minimum_disk_size(layout, sector)
        except DoesNotFit as e:
            raise DoesNotFit(f"{args.file}: {e.message}", hint=e.hint) from None
        print(
            f"{args.file}: ok, label {layout.label}, {len(layout.partitions)} partitions, "
            f"fits disks of {smallest // (1024 * 1024)} MiB or more"
        )
        print(layout.to_desc(), end="")
        return 0
    print(_plan(layout, size, sector).describe())
    return 0


def _geometry(disk: str) -> tuple[int, int]:
    size = disk_size(disk)
    if size == 0:
        raise KaError(
            f"{disk} has no medium (its size is 0)",
            hint="attach the loop device first (losetup), or insert the medium",
        )
    return size, sector_size(disk)


def _plan(layout: Layout, size: int, sector: int) -> Plan:
    """The plan, or a DoesNotFit that also tells the smallest disk the layout fits."""
    try:
        return plan_layout(layout, size, sector)
    except DoesNotFit as e:
        try:
            smallest = f"{minimum_disk_size(layout, sector) // (1024 * 1024)} MiB"
        except DoesNotFit:
            smallest = "none"
        raise DoesNotFit(
            e.message, hint=f"the smallest disk it fits is {smallest}; {e.hint}"
        ) from None


def _apply(args: argparse.Namespace) -> int:
    layout = _read_layout(args.file)
    plan = _plan(layout, *_geometry(args.disk))
    if args.dry_run:
        result = apply_plan(plan, args.disk, target=args.target, dry_run=True)
        print(plan.describe())
        print("\ncommands:")
        for step in result.steps:
            print(step.command_line())
        return 0
    if not args.yes:
        if args.file == "-" or not sys.stdin.isatty():
            raise UsageError(
                f"refusing to erase {args.disk} without --yes (stdin is not a terminal)",
                hint="check with --dry-run, then add --yes",
            )
        print(plan.describe())
        answer = input(f"Erase everything on {args.disk} and apply this layout? Type 'yes': ")
        if answer.strip() != "yes":
            print("nothing done")
            return 1

    def progress(step: Step) -> None:
        print(f"ka: {step.description}", file=sys.stderr)

    result = apply_plan(plan, args.disk, target=args.target, on_step=progress)
    for p in result.partitions:
        print(
            f"{p.devnode}  {p.fstype or '-'}  uuid={p.uuid or '-'}  label={p.label or '-'}"
            f"  {p.mountpoint or ''}".rstrip()
        )
    for path in result.mounted:
        print(f"mounted {path}")
    return 0
