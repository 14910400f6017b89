"""Checks of a parsed desc: each line on its own, then the layout as a whole."""

from __future__ import annotations

import re
from collections.abc import Callable

from ka.disk.layout import PartitionSpec, Size, TableLabel
from ka.disk.types import FILESYSTEMS, GPT_ROLES, GUID_RE, LABEL_LIMITS, MBR_ROLES

# problem(line, column, found, expected, hint)
Report = Callable[[int, int, str, str, str], None]
# column(spec, key): where on its line the part `key` of a spec was written ("kind", "type",
# "size", or an attribute key such as "mount").
Column = Callable[[PartitionSpec, str], int]

GPT_NAME_UNITS = 36  # a GPT entry holds the name in 72 bytes of UTF-16
_VFAT_ID_RE = re.compile(r"^[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}$")


def spec_problems(spec: PartitionSpec) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if spec.fs is not None and spec.fs not in FILESYSTEMS:
        out.append(("fs", "a filesystem: " + ", ".join(FILESYSTEMS), "e.g. fs=ext4"))
    if spec.kind == "extended" and (spec.fs or spec.mountpoint or spec.label or spec.uuid):
        out.append(
            (
                "type",
                "no filesystem on an extended partition",
                "put the filesystem on a `logical` line",
            )
        )
    if spec.type in ("bios", "lvm", "raid") and spec.fs:
        out.append(
            (
                "fs",
                f"no filesystem on a {spec.type} partition",
                "drop fs= (the filesystem goes on the volume built over it)",
            )
        )
    if spec.fs == "swap" and spec.mountpoint:
        out.append(
            ("mount", "no mount point for swap", "drop mount= (swap is activated, not mounted)")
        )
    if spec.type == "swap" and spec.fs != "swap":
        out.append(
            ("fs", "fs=swap (or nothing) on a swap partition", "use role `linux` for a filesystem")
        )
    if spec.mountpoint is not None:
        mp = spec.mountpoint
        if (
            not mp.startswith("/")
            or "//" in mp
            or (mp != "/" and mp.endswith("/"))
            or "/../" in mp + "/"
            or "/./" in mp + "/"
        ):
            out.append(
                (
                    "mount",
                    "an absolute, normalised mount point like /var",
                    "no trailing slash, no . or ..",
                )
            )
        elif spec.fs is None:
            out.append(
                (
                    "mount",
                    "a filesystem (fs=...) for a partition that has a mount point",
                    "add e.g. fs=ext4",
                )
            )
    if (
        spec.label is not None
        and spec.fs in LABEL_LIMITS
        and len(spec.label.encode()) > LABEL_LIMITS[spec.fs]
    ):
        out.append(
            (
                "label",
                f"a {spec.fs} label of at most {LABEL_LIMITS[spec.fs]} bytes",
                "shorten the label",
            )
        )
    if spec.name is not None and len(spec.name.encode("utf-16-le")) > 2 * GPT_NAME_UNITS:
        out.append(
            (
                "name",
                f"a GPT partition name of at most {GPT_NAME_UNITS} characters",
                "shorten the name (sfdisk would cut it)",
            )
        )
    if spec.uuid is not None:
        valid = GUID_RE.match(spec.uuid) or (spec.fs == "vfat" and _VFAT_ID_RE.match(spec.uuid))
        if not valid:
            out.append(
                (
                    "uuid",
                    "a UUID like 0fc63daf-8483-4772-8e79-3d69d8477de4 (vfat: ABCD-1234)",
                    "uuidgen prints one",
                )
            )
    return out


def check_layout(
    label: TableLabel,
    specs: list[PartitionSpec],
    problem: Report,
    column: Column = lambda spec, key: 1,
) -> None:
    if label == "gpt":
        for s in specs:
            if s.kind != "primary":
                problem(
                    s.line,
                    column(s, "kind"),
                    s.kind,
                    "no extended or logical partitions in a GPT label",
                    "drop `extended` and `logical` (GPT has up to 128 partitions), "
                    "or write `label dos`",
                )
            elif s.type not in GPT_ROLES and not GUID_RE.match(s.type):
                problem(
                    s.line,
                    column(s, "type"),
                    s.type,
                    "a type GPT can hold (a role name or a GUID)",
                    f"MBR type {s.type} has no GPT equivalent known to ka: give a GPT type GUID",
                )
        if len(specs) > 128:
            problem(
                specs[128].line,
                column(specs[128], "kind"),
                specs[128].type,
                "at most 128 partitions",
                "merge partitions",
            )
        fills = [s for s in specs if s.size.kind == "fill"]
        for s in fills[1:]:
            problem(
                s.line,
                column(s, "size"),
                "fill",
                "one `fill` partition",
                f"line {fills[0].line} already takes the rest",
            )
    else:
        primaries = [s for s in specs if s.kind != "logical"]
        if len(primaries) > 4:
            problem(
                primaries[4].line,
                column(primaries[4], "kind"),
                primaries[4].type,
                "at most 4 primary partitions (extended included) in an MBR",
                "put the others as `logical` inside an `extended` partition",
            )
        extended = [s for s in specs if s.kind == "extended"]
        if len(extended) > 1:
            problem(
                extended[1].line,
                column(extended[1], "type"),
                "extended",
                "a single extended partition",
                "put all logicals in the first one",
            )
        seen_extended = False
        for s in specs:
            if s.kind == "extended":
                seen_extended = True
            elif s.kind == "logical" and not seen_extended:
                problem(
                    s.line,
                    column(s, "kind"),
                    "logical",
                    "an `extended` line before the first `logical` line",
                    "add e.g. `extended fill` above",
                )
            if s.type not in MBR_ROLES and not s.type.startswith("type"):
                problem(
                    s.line,
                    column(s, "type"),
                    s.type,
                    "a type an MBR can hold",
                    "GPT type GUIDs and `bios` need `label gpt`",
                )
        for kind in (("primary", "extended"), ("logical",)):
            fills = [s for s in specs if s.kind in kind and s.size.kind == "fill"]
            for s in fills[1:]:
                problem(
                    s.line,
                    column(s, "size"),
                    "fill",
                    "one `fill` per level",
                    f"line {fills[0].line} already takes the rest",
                )
        for s in specs:
            if s.name is not None:
                problem(
                    s.line,
                    column(s, "name"),
                    f"name={s.name}",
                    "no partition name in an MBR",
                    "partition names (name=) exist only in GPT; use label= for the filesystem",
                )
    for level in ("top", "logical"):
        same_level = [s for s in specs if (s.kind == "logical") == (level == "logical")]
        _check_percentages(same_level, problem, column)
    seen: dict[str, int] = {}
    for s in specs:
        if s.mountpoint:
            if s.mountpoint in seen:
                problem(
                    s.line,
                    column(s, "mount"),
                    s.mountpoint,
                    "each mount point once",
                    f"{s.mountpoint} is already on line {seen[s.mountpoint]}",
                )
            seen.setdefault(s.mountpoint, s.line)
    roots = [s for s in specs if s.root]
    for s in roots[1:]:
        problem(
            s.line,
            column(s, "root"),
            "root",
            "a single root partition",
            f"line {roots[0].line} is already the root",
        )
    if label == "dos":
        boots = [s for s in specs if s.boot]
        for s in boots[1:]:
            problem(
                s.line,
                column(s, "boot"),
                "boot",
                "a single bootable partition",
                f"line {boots[0].line} is already bootable",
            )


def _check_percentages(level: list[PartitionSpec], problem: Report, column: Column) -> None:
    """Percentages of one level that fit no disk: the first MiB (and the table) is never free,
    so 100% of the disk, alone or added up, can never be placed."""
    total = 0
    lines: list[str] = []
    for s in level:
        if s.size.kind != "percent":
            continue
        total += s.size.value
        lines.append(str(s.line))
        if total >= 10000:
            what = f"{s.size.to_desc()} of the disk"
            if len(lines) > 1:
                what = f"lines {', '.join(lines)} add up to {Size.percent(total).to_desc()}, which"
            problem(
                s.line,
                column(s, "size"),
                s.size.to_desc(),
                "percentages of the disk that add up to less than 100% (on one level)",
                f"{what} leaves no room for the partition table: write `fill` for the rest",
            )
            return
