"""The planner: alignment, MBR logicals, GPT backup area, fill, percentages; properties."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ka.disk import (
    DescError,
    DoesNotFit,
    Layout,
    PartitionSpec,
    Plan,
    Size,
    minimum_disk_size,
    parse_desc,
    plan_layout,
)
from ka.disk.layout import GIB, MIB

pytestmark = pytest.mark.usefixtures("no_subprocess")

SEED = "linux 3500\nextended fill\nlogical swap 500\nlogical linux fill\n"
SECTORS_8G = 8 * GIB // 512


def test_seed_on_8_gib() -> None:
    plan = plan_layout(parse_desc(SEED), 8 * GIB)
    rows = [(p.number, p.kind, p.start, p.size, p.type_code) for p in plan.partitions]
    assert rows == [
        (1, "primary", 2048, 3500 * 2048, "83"),
        (2, "extended", 2048 + 3500 * 2048, SECTORS_8G - (2048 + 3500 * 2048), "5"),
        (5, "logical", 2048 * 3502, 500 * 2048, "82"),
        (6, "logical", 2048 * 4003, SECTORS_8G - 2048 * 4003, "83"),
    ]
    script = plan.sfdisk_script()
    assert script.splitlines()[:2] == ["label: dos", "unit: sectors"]
    assert "start=2048, size=7168000, type=83" in script


def test_gpt_keeps_backup_header_area_free_and_fill_takes_the_rest() -> None:
    plan = plan_layout(parse_desc("label gpt\nesp 512MiB\nlinux fill\n"), 8 * GIB)
    last = plan.partitions[-1]
    assert last.end == SECTORS_8G - 33
    assert plan.end_usable == SECTORS_8G - 33
    assert plan.first_usable == 34


def test_gpt_4k_sectors() -> None:
    plan = plan_layout(parse_desc("label gpt\nlinux fill\n"), GIB, sector_size=4096)
    (p,) = plan.partitions
    assert p.start == 256  # 1 MiB in 4 KiB sectors
    assert p.end == GIB // 4096 - 5  # 4 sectors of entries + 1 header


def test_fill_in_the_middle_leaves_room_for_what_follows() -> None:
    plan = plan_layout(parse_desc("label gpt\nlinux 1GiB\nlinux fill\nswap 1GiB\n"), 8 * GIB)
    a, b, c = plan.partitions
    assert b.start == a.end and c.start == b.end
    assert c.size_bytes == GIB
    assert c.end <= plan.end_usable and plan.end_usable - c.end < 2048


def test_fill_before_a_partition_of_less_than_a_mib_leaves_no_free_mib() -> None:
    plan = plan_layout(parse_desc("label gpt\nlinux fill\nlinux 100KiB\n"), 8 * GIB)
    fill, small = plan.partitions
    assert small.start == fill.end and small.size == 200
    assert plan.end_usable - small.end < 2048  # before, a whole MiB was left after it


def test_percent_is_of_the_whole_disk_in_whole_mib() -> None:
    plan = plan_layout(parse_desc("label gpt\nlinux 25%\nlinux 50%\n"), 8 * GIB)
    assert [p.size_bytes for p in plan.partitions] == [2 * GIB, 4 * GIB]
    plan = plan_layout(parse_desc("label gpt\nlinux 30%\n"), GIB)
    assert plan.partitions[0].size_bytes == 307 * MIB
    with pytest.raises(DoesNotFit) as info:
        plan_layout(parse_desc("label gpt\nlinux 0.05%\n"), GIB)
    assert "less than 1 MiB" in str(info.value)


def test_unaligned_size_still_aligned_start() -> None:
    plan = plan_layout(parse_desc("label gpt\nlinux 100KiB\nlinux 100KiB\n"), GIB)
    assert [p.start % 2048 for p in plan.partitions] == [0, 0]
    assert plan.partitions[0].size == 200


def test_does_not_fit_names_the_line() -> None:
    layout = parse_desc("label gpt\nlinux 4GiB\nlinux 5GiB\n", "big.desc")
    with pytest.raises(DoesNotFit) as info:
        plan_layout(layout, 8 * GIB)
    assert str(info.value).startswith("big.desc:3:7: partition 2 (`linux 5GiB`) needs 5120 MiB")
    assert info.value.hint
    unnamed = Layout("gpt", (PartitionSpec("linux", Size.mib(9000)),))
    with pytest.raises(DoesNotFit, match="^partition 1 "):  # built in code: no file, no line
        plan_layout(unnamed, 8 * GIB)
    with pytest.raises(DoesNotFit):
        plan_layout(parse_desc("linux 100\nextended 50\nlogical linux 50\n"), GIB)
    with pytest.raises(DoesNotFit):  # a fill with nothing left
        plan_layout(parse_desc("label gpt\nlinux 1023MiB\nlinux fill\n"), GIB)


def test_mbr_is_capped_at_2_tib() -> None:
    plan = plan_layout(parse_desc("label dos\nlinux fill\n"), 4 * 1024 * GIB)
    assert plan.partitions[0].end == 2**32


def test_describe_lists_every_partition() -> None:
    text = plan_layout(parse_desc(SEED), 8 * GIB).describe()
    assert "8192 MiB" in text
    for needle in ("extended", "7168000", "3500", "4189"):
        assert needle in text


# ---- properties -------------------------------------------------------------------------------

_sizes = st.one_of(
    st.integers(1, 4096).map(Size.mib),
    st.integers(1, 2**20).map(lambda k: Size.of_bytes(k * 1024)),
    st.integers(10, 3000).map(Size.percent),
)
_types = st.sampled_from(["linux", "swap", "esp", "lvm", "raid", "type7"])


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    label = draw(st.sampled_from(["gpt", "dos"]))
    specs: list[PartitionSpec] = []
    if label == "gpt":
        n = draw(st.integers(1, 8))
        fill_at = draw(st.one_of(st.none(), st.integers(0, n - 1)))
        for i in range(n):
            t = draw(_types.filter(lambda t: t != "type7"))
            specs.append(PartitionSpec(t, Size.fill() if i == fill_at else draw(_sizes)))
        return Layout("gpt", tuple(specs))
    primaries = draw(st.integers(0, 3))
    with_extended = draw(st.booleans()) or primaries == 0
    fill_at = draw(st.one_of(st.none(), st.integers(0, primaries)))
    for i in range(primaries + (1 if with_extended else 0)):
        size = Size.fill() if i == fill_at else draw(_sizes)
        if with_extended and i == primaries:
            specs.append(PartitionSpec("extended", size, kind="extended"))
        else:
            specs.append(PartitionSpec(draw(_types), size))
    if with_extended:
        m = draw(st.integers(0, 5))
        lfill = draw(st.one_of(st.none(), st.integers(0, max(m - 1, 0))))
        for j in range(m):
            size = Size.fill() if j == lfill else draw(_sizes)
            specs.append(PartitionSpec(draw(_types), size, kind="logical"))
    return Layout("dos", tuple(specs))


def _check(plan: Plan, layout: Layout) -> None:
    align = MIB // plan.sector_size
    ss = plan.sector_size
    parts = sorted(plan.partitions, key=lambda p: p.start)
    assert len(parts) == len(layout.partitions)
    extended = [p for p in parts if p.kind == "extended"]
    top = [p for p in parts if p.kind != "logical"]
    for p in parts:
        assert p.size > 0
        assert p.start % align == 0
        assert plan.first_usable <= p.start and p.end <= plan.end_usable <= plan.total_sectors
    for a, b in zip(top, top[1:], strict=False):
        assert a.end <= b.start
    logicals = [p for p in parts if p.kind == "logical"]
    for p in logicals:
        (ext,) = extended
        assert ext.start + align <= p.start and p.end <= ext.end  # room for the EBR
    for a, b in zip(logicals, logicals[1:], strict=False):
        assert a.end + 1 <= b.start  # an EBR sector between logicals
    by_number = {n: s for n, s in layout.numbered()}
    for p in parts:
        spec = by_number[p.number]
        if spec.size.kind == "bytes":
            assert p.size_bytes == -(-spec.size.value // ss) * ss
    # fill takes exactly the rest: the last sibling that is fill ends at its container's end
    for level, end in ((top, plan.end_usable), (logicals, extended[0].end if extended else 0)):
        if level and by_number[level[-1].number].size.kind == "fill":
            assert level[-1].end == end
        for p in level[:-1]:
            if by_number[p.number].size.kind == "fill":
                nxt = level[level.index(p) + 1]
                assert nxt.start - p.end < 2 * align


# Disk sizes in whole MiB plus a few odd sectors, and both sector sizes of real disks.
_disks = st.tuples(st.integers(1, 64 * 1024), st.sampled_from([512, 4096])).map(
    lambda d: (d[0] * MIB + d[1] * 7, d[1])
)


@settings(max_examples=300, deadline=None)
@given(layouts(), _disks)
def test_plan_properties(layout: Layout, disk: tuple[int, int]) -> None:
    try:
        plan = plan_layout(layout, *disk)
    except DoesNotFit:
        return
    _check(plan, layout)


@settings(max_examples=300, deadline=None)
@given(layouts(), _disks)
def test_fill_takes_exactly_the_rest(layout: Layout, disk: tuple[int, int]) -> None:
    """A fill is as large as it can be: the same size written out gives the same plan, and
    one MiB more no longer fits the disk."""
    try:
        plan = plan_layout(layout, *disk)
    except DoesNotFit:
        return
    planned = {p.number: p for p in plan.partitions}
    for i, (number, spec) in enumerate(layout.numbered()):
        if spec.size.kind != "fill":
            continue

        def sized(nbytes: int, i: int = i, spec: PartitionSpec = spec) -> Layout:
            parts = list(layout.partitions)
            parts[i] = dataclasses.replace(spec, size=Size.of_bytes(nbytes))
            return Layout(layout.label, tuple(parts))

        assert plan_layout(sized(planned[number].size_bytes), *disk) == plan
        with pytest.raises(DoesNotFit):
            plan_layout(sized(planned[number].size_bytes + MIB), *disk)


_label_text = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789_-.", min_size=1, max_size=11
)
_filesystems = st.sampled_from(["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "jfs", "reiserfs"])


@st.composite
def decorated(draw: st.DrawFn) -> Layout:
    """Layouts with filesystems, mount points, labels, names, options, UUIDs and flags."""
    layout = draw(layouts())
    specs = []
    used: set[str] = set()
    root_taken = boot_taken = False
    for i, s in enumerate(layout.partitions):
        if s.kind == "extended" or s.type in ("swap", "lvm", "raid"):
            specs.append(s)
            continue
        fs = draw(st.one_of(st.none(), _filesystems))
        mount = None
        if fs and draw(st.booleans()):
            mount = "/" if not root_taken and draw(st.booleans()) else f"/m{i}"
            if mount in used:
                mount = None
            else:
                used.add(mount)
                root_taken = root_taken or mount == "/"
        boot = not boot_taken and draw(st.booleans())
        boot_taken = boot_taken or boot
        specs.append(
            dataclasses.replace(
                s,
                fs=fs,
                mountpoint=mount,
                label=draw(st.one_of(st.none(), _label_text)) if fs else None,
                name=draw(st.one_of(st.none(), _label_text)) if layout.label == "gpt" else None,
                options=draw(st.one_of(st.none(), st.sampled_from(["noatime", "ro,nodev"]))),
                uuid=str(draw(st.uuids())) if fs and fs != "vfat" and draw(st.booleans()) else None,
                boot=boot,
                root=mount == "/",
            )
        )
    return Layout(layout.label, tuple(specs))


def _percent_total(layout: Layout, logical: bool) -> int:
    return sum(
        s.size.value
        for s in layout.partitions
        if s.size.kind == "percent" and (s.kind == "logical") == logical
    )


@settings(max_examples=300, deadline=None)
@given(st.one_of(layouts(), decorated()))
def test_to_desc_round_trip(layout: Layout) -> None:
    if max(_percent_total(layout, False), _percent_total(layout, True)) >= 10000:
        with pytest.raises(DescError, match="less than 100%"):  # fits no disk: refused
            parse_desc(layout.to_desc())
        return
    assert parse_desc(layout.to_desc()) == layout


@settings(max_examples=100, deadline=None)
@given(layouts())
def test_a_large_enough_disk_always_fits(layout: Layout) -> None:
    fixed = sum(s.size.value for s in layout.partitions if s.size.kind == "bytes")
    pct = sum(s.size.value for s in layout.partitions if s.size.kind == "percent")
    if pct >= 9000 or any(
        s.kind == "extended" and s.size.kind != "fill" for s in layout.partitions
    ):
        return  # a fixed extended partition may be too small for its logicals on any disk
    fills = sum(1 for s in layout.partitions if s.size.kind == "fill")
    # fixed sizes plus one MiB of alignment/EBR slack per partition, scaled for percentages
    need = (fixed + (len(layout.partitions) + fills + 2) * 2 * MIB) * 10000 // (10000 - pct)
    plan = plan_layout(layout, max(need + 8 * MIB, 8 * GIB))
    _check(plan, layout)


@settings(max_examples=100, deadline=None)
@given(layouts())
def test_minimum_disk_size_is_the_edge(layout: Layout) -> None:
    if any(s.kind == "extended" and s.size.kind != "fill" for s in layout.partitions):
        return
    if any(s.size.kind == "percent" for s in layout.partitions):
        return  # percentages round to whole MiB: the edge is only exact to about a MiB
    smallest = minimum_disk_size(layout)
    plan_layout(layout, smallest)
    with pytest.raises(DoesNotFit):
        plan_layout(layout, smallest - MIB)


def test_minimum_disk_size_of_the_seed() -> None:
    assert minimum_disk_size(parse_desc(SEED)) == 4004 * MIB
