"""The planner: a `Layout` on a disk of a given size becomes exact sectors. Pure, no I/O.

Every partition starts on a 1 MiB boundary. In an MBR each logical partition is preceded by a
1 MiB gap that holds its EBR. In a GPT the last 33 sectors (512-byte sectors) hold the backup
entries and header, so nothing is placed there. `fill` takes exactly what is left of its level
(the disk, or the extended partition) after the partitions that follow it on that level.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka.disk.errors import DoesNotFit
from ka.disk.layout import MIB, Kind, Layout, PartitionSpec, TableLabel
from ka.disk.types import type_code

GPT_ENTRIES_BYTES = 128 * 128
MBR_MAX_SECTORS = 2**32


@dataclass(frozen=True)
class PlannedPartition:
    number: int
    kind: Kind
    start: int  # first sector
    size: int  # sectors
    sector_size: int
    type: str  # canonical desc type token
    type_code: str  # what sfdisk writes: MBR hex byte or GPT GUID
    fs: str | None = None
    mountpoint: str | None = None
    label: str | None = None
    options: str | None = None
    name: str | None = None
    uuid: str | None = None
    boot: bool = False
    root: bool = False

    @property
    def end(self) -> int:
        """First sector after the partition."""
        return self.start + self.size

    @property
    def start_bytes(self) -> int:
        return self.start * self.sector_size

    @property
    def size_bytes(self) -> int:
        return self.size * self.sector_size


@dataclass(frozen=True)
class Plan:
    label: TableLabel
    disk_size: int  # bytes
    sector_size: int
    first_usable: int  # first sector a partition may use
    end_usable: int  # first sector after the usable area
    partitions: tuple[PlannedPartition, ...]

    @property
    def total_sectors(self) -> int:
        return self.disk_size // self.sector_size

    def describe(self) -> str:
        """A table of every partition in MiB and sectors, for people."""
        head = (
            f"label {self.label} on a disk of {_mib(self.disk_size)} MiB "
            f"({self.total_sectors} sectors of {self.sector_size} bytes), "
            "partitions aligned to 1 MiB"
        )
        rows = [
            (
                "#",
                "kind",
                "start MiB",
                "size MiB",
                "start s",
                "size s",
                "type",
                "fs",
                "mount",
                "label",
                "flags",
            )
        ]
        for p in self.partitions:
            flags = ",".join(f for f, on in (("boot", p.boot), ("root", p.root)) if on)
            rows.append(
                (
                    str(p.number),
                    p.kind,
                    _mib(p.start_bytes),
                    _mib(p.size_bytes),
                    str(p.start),
                    str(p.size),
                    p.type if len(p.type) < 20 else p.type[:8] + "…",
                    p.fs or "-",
                    p.mountpoint or "-",
                    p.label or "-",
                    flags or "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        numeric = {0, 2, 3, 4, 5}
        lines = [head]
        for r in rows:
            cells = [
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        free = self.end_usable - max((p.end for p in self.partitions), default=self.first_usable)
        lines.append(
            f"unallocated after the last partition: {_mib(max(free, 0) * self.sector_size)} MiB"
        )
        return "\n".join(lines)

    def sfdisk_script(self) -> str:
        """The sfdisk input that writes exactly this table (explicit sectors, no guessing)."""
        out = [f"label: {self.label}", "unit: sectors"]
        if self.label == "gpt":
            out.append(f"first-lba: {self.first_usable}")
        ordered = sorted(self.partitions, key=lambda p: p.number)
        for p in ordered:
            fields = [f"start={p.start}", f"size={p.size}", f"type={p.type_code}"]
            if self.label == "gpt":
                if p.name:
                    fields.append(f'name="{p.name}"')
                if p.boot:
                    fields.append('attrs="LegacyBIOSBootable"')
            elif p.boot:
                fields.append("bootable")
            out.append(", ".join(fields))
        return "\n".join(out) + "\n"


def _mib(n: int) -> str:
    return str(n // MIB) if n % MIB == 0 else f"{n / MIB:.2f}"


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


def _align_down(x: int, a: int) -> int:
    return x // a * a


def usable_area(label: TableLabel, total_sectors: int, sector_size: int) -> tuple[int, int]:
    """(first sector a partition may use, first sector after the usable area) of a disk."""
    if label == "gpt":
        entries = -(-GPT_ENTRIES_BYTES // sector_size)
        return 2 + entries, total_sectors - 1 - entries
    return 1, min(total_sectors, MBR_MAX_SECTORS)


def plan_layout(layout: Layout, disk_size: int, sector_size: int = 512) -> Plan:
    """Place every partition of `layout` on a disk of `disk_size` bytes; raises DoesNotFit."""
    if sector_size <= 0 or sector_size & (sector_size - 1):
        raise ValueError(f"sector size must be a power of two, not {sector_size}")
    align = max(MIB // sector_size, 1)
    first, end = usable_area(layout.label, disk_size // sector_size, sector_size)
    if end - _align_up(first, align) < align:
        raise DoesNotFit(
            f"a disk of {disk_size} bytes is too small for any partition",
            hint="the smallest useful disk is a few MiB",
        )
    ctx = _Context(layout, disk_size, sector_size, align)
    numbered = layout.numbered()
    top = [(n, s) for n, s in numbered if s.kind != "logical"]
    placed = ctx.place(top, _align_up(first, align), end, logical=False)
    out: list[PlannedPartition] = []
    for (n, spec), (start, size) in zip(top, placed, strict=True):
        out.append(_planned(n, spec, start, size, sector_size, layout.label))
        if spec.kind == "extended":
            logicals = [(n2, s2) for n2, s2 in numbered if s2.kind == "logical"]
            inner = ctx.place(logicals, start, start + size, logical=True)
            for (n2, s2), (st2, sz2) in zip(logicals, inner, strict=True):
                out.append(_planned(n2, s2, st2, sz2, sector_size, layout.label))
    out.sort(key=lambda p: (p.start, p.number))
    return Plan(layout.label, disk_size, sector_size, first, end, tuple(out))


def _planned(
    n: int, s: PartitionSpec, start: int, size: int, ss: int, label: str
) -> PlannedPartition:
    return PlannedPartition(
        number=n,
        kind=s.kind,
        start=start,
        size=size,
        sector_size=ss,
        type=s.type,
        type_code=type_code(s.type, label),
        fs=s.fs,
        mountpoint=s.mountpoint,
        label=s.label,
        options=s.options,
        name=s.name,
        uuid=s.uuid,
        boot=s.boot,
        root=s.root,
    )


@dataclass(frozen=True)
class _Context:
    layout: Layout
    disk_size: int
    sector_size: int
    align: int

    def sectors(self, spec: PartitionSpec) -> int:
        if spec.size.kind == "percent":
            # Whole MiB, so that the partitions after it stay on MiB boundaries and a probe
            # of the result reads back in MiB.
            nbytes = _align_down(self.disk_size * spec.size.value // 10000, MIB)
            return nbytes // self.sector_size
        else:
            nbytes = spec.size.value
        return -(-nbytes // self.sector_size)

    def place(
        self, items: list[tuple[int, PartitionSpec]], cstart: int, cend: int, logical: bool
    ) -> list[tuple[int, int]]:
        """(start, size) of each item laid out in order in [cstart, cend)."""
        gap = self.align if logical else 0
        cursor = cstart
        out: list[tuple[int, int]] = []
        for i, (number, spec) in enumerate(items):
            start = _align_up(cursor, self.align) + gap
            if spec.size.kind == "fill":
                # The latest each later partition can start (aligned, after its gap), from the
                # last one back: the fill ends where the first of them must begin.
                stop = cend
                for _, later in reversed(items[i + 1 :]):
                    stop = _align_down(stop - self.sectors(later), self.align) - gap
                size = stop - start
            else:
                size = self.sectors(spec)
            if size <= 0 or start + size > cend:
                self._does_not_fit(number, spec, start, cend, size)
            out.append((start, size))
            cursor = start + size
        return out

    def _does_not_fit(
        self, number: int, spec: PartitionSpec, start: int, cend: int, size: int
    ) -> None:
        left = max(cend - start, 0) * self.sector_size
        where = ""
        if spec.line:
            source = self.layout.source
            col = f":{spec.column}" if spec.column else ""
            where = f"{source}:{spec.line}{col}: " if source else f"line {spec.line}: "
        level = "the extended partition" if spec.kind == "logical" else "the disk"
        if spec.size.kind == "fill":
            need = "needs at least 1 sector, but the partitions after it leave none"
        elif spec.size.kind == "percent" and size <= 0:
            need = "is less than 1 MiB of this disk"
        else:
            need = f"needs {_mib(size * self.sector_size)} MiB"
        raise DoesNotFit(
            f"{where}partition {number} (`{spec.to_desc()}`) {need}; only {_mib(left)} MiB are "
            f"left on {level} ({_mib(self.disk_size)} MiB disk)",
            hint="use smaller sizes, a percentage, or `fill`; or use a larger disk",
        )


def minimum_disk_size(layout: Layout, sector_size: int = 512) -> int:
    """The smallest disk (a whole number of MiB) that `layout` fits on, in bytes.

    Fitting gets easier as the disk grows, so a binary search over MiB finds the edge (with
    percentages, which round to whole MiB, the edge is exact to about a MiB).
    """
    lo, hi = 1, 2
    while not _fits(layout, hi * MIB, sector_size):
        lo, hi = hi, hi * 2
        if hi > 2**40:  # 1 EiB: a layout that fits nowhere (percentages above 100%)
            raise DoesNotFit(
                "this layout fits no disk",
                hint="the logical partitions must fit in the extended one (with 1 MiB before "
                "each), and the percentages must add up to less than 100%",
            )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(layout, mid * MIB, sector_size):
            hi = mid
        else:
            lo = mid
    return hi * MIB


def _fits(layout: Layout, size: int, sector_size: int) -> bool:
    try:
        plan_layout(layout, size, sector_size)
    except DoesNotFit:
        return False
    return True
