"""The desc grammar: original files, extensions, and error reporting."""

from __future__ import annotations

import pytest

from ka.disk import DescError, Layout, PartitionSpec, Size, parse_desc, parse_size
from ka.disk.layout import GIB, KIB, MIB, TIB

pytestmark = pytest.mark.usefixtures("no_subprocess")

SEED = "linux 3500\nextended fill\nlogical swap 500\nlogical linux fill\n"


def test_seed_example_means_what_it_meant() -> None:
    layout = parse_desc(SEED, "seed.desc")
    assert layout.label == "dos"
    assert [(n, s.kind, s.type, s.size) for n, s in layout.numbered()] == [
        (1, "primary", "linux", Size.mib(3500)),
        (2, "extended", "extended", Size.fill()),
        (5, "logical", "swap", Size.mib(500)),
        (6, "logical", "linux", Size.fill()),
    ]


def test_man_page_example_and_type_hex() -> None:
    text = (
        "# comment\nlinux 5000\nswap 300\nextended fill\nlogical type7 500\nlogical typefd fill\n"
    )
    layout = parse_desc(text)
    assert layout.label == "dos"
    assert [(n, s.type) for n, s in layout.numbered()] == [
        (1, "linux"),
        (2, "swap"),
        (3, "extended"),
        (5, "type7"),
        (6, "raid"),
    ]
    assert parse_desc("type83 100\n").partitions[0].type == "linux"
    assert parse_desc("type82 100\n").partitions[0].fs == "swap"


def test_original_syntax_without_label_is_dos_and_extensions_default_to_gpt() -> None:
    assert parse_desc("linux 100\nlinux fill\n").label == "dos"
    assert parse_desc("linux 100MiB\nlinux fill\n").label == "gpt"
    assert parse_desc("esp 100\nlinux fill\n").label == "gpt"
    assert parse_desc("linux 100 fs=ext4\n").label == "gpt"
    assert parse_desc("linux 1GiB\nextended fill\nlogical linux fill\n").label == "dos"
    assert parse_desc("label dos\nlinux 100MiB\n").label == "dos"
    assert parse_desc("label gpt\nlinux 100\n").label == "gpt"


@pytest.mark.parametrize(
    ("token", "size"),
    [
        ("3500", Size.of_bytes(3500 * MIB)),
        ("512MiB", Size.of_bytes(512 * MIB)),
        ("512M", Size.of_bytes(512 * MIB)),
        ("1.5GiB", Size.of_bytes(3 * GIB // 2)),
        ("2TiB", Size.of_bytes(2 * TIB)),
        ("64KiB", Size.of_bytes(64 * KIB)),
        ("4096B", Size.of_bytes(4096)),
        ("25%", Size.percent(2500)),
        ("12.5%", Size.percent(1250)),
        ("fill", Size.fill()),
        ("FILL", Size.fill()),
    ],
)
def test_sizes(token: str, size: Size) -> None:
    assert parse_size(token) == size


@pytest.mark.parametrize("token", ["0", "0MiB", "12MB", "1GB", "abc", "101%", "0%", "1.234%", "-5"])
def test_bad_sizes(token: str) -> None:
    with pytest.raises(ValueError):
        parse_size(token)


def test_extensions_full_line() -> None:
    text = (
        "label gpt\n"
        "esp 512MiB fs=vfat mount=/boot/efi label=EFI name=esp\n"
        "bios 1MiB\n"
        "linux 20GiB ext4 / label=root options=noatime,discard boot\n"
        "swap 2GiB label=swap\n"
        "lvm 10% \n"
        "raid 1GiB\n"
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4 1GiB fs=btrfs mount=/srv\n"
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915 fill xfs /home root  # trailing comment\n"
    )
    with pytest.raises(DescError):  # two roots
        parse_desc(text)
    layout = parse_desc(text.replace(" root  #", "  #"))
    esp, bios, root, swap, lvm, raid, srv, home = layout.partitions
    assert (esp.type, esp.fs, esp.mountpoint, esp.label, esp.name) == (
        "esp",
        "vfat",
        "/boot/efi",
        "EFI",
        "esp",
    )
    assert bios.type == "bios" and bios.fs is None
    assert root.root and root.boot and root.options == "noatime,discard" and root.fs == "ext4"
    assert swap.fs == "swap" and swap.label == "swap"
    assert lvm.size == Size.percent(1000)
    assert raid.type == "raid"
    assert srv.type == "linux" and srv.fs == "btrfs"
    assert home.type == "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" and home.mountpoint == "/home"


def test_to_desc_round_trip_of_hand_written_file() -> None:
    text = "label gpt\nesp 512MiB fs=vfat mount=/boot/efi\nlinux fill fs=ext4 mount=/ label=r\n"
    layout = parse_desc(text)
    assert parse_desc(layout.to_desc()) == layout
    seed = parse_desc(SEED)
    assert parse_desc(seed.to_desc()) == seed
    assert seed.to_desc().startswith("label dos\n")


def test_root_flag_and_mount_root_are_one_thing() -> None:
    built = PartitionSpec("linux", Size.fill(), fs="ext4", mountpoint="/")
    assert built.root
    assert parse_desc(Layout("gpt", (built,)).to_desc()).partitions == (built,)


def _error(text: str) -> DescError:
    with pytest.raises(DescError) as info:
        parse_desc(text, "layout.desc")
    return info.value


def test_error_names_file_line_column_expected_and_hint() -> None:
    err = _error("linux 3500\nextended fill\nlogical swap 5OO\n")
    (p,) = err.problems
    assert (p.filename, p.line, p.column, p.found) == ("layout.desc", 3, 14, "5OO")
    assert "size" in p.expected and p.hint
    assert str(err).startswith("layout.desc:3:14: expected")
    assert err.hint and "nothing was applied" in err.hint
    assert err.exit_code == 2


def test_every_wrong_line_is_reported() -> None:
    err = _error("lunix 100\nlinux 100 fs=ext9\nlinux 10 /var\nlinux fill\n")
    assert [(p.line, p.column) for p in err.problems] == [(1, 1), (2, 11), (3, 10)]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("linux 1\nlinux 1\nlinux 1\nlinux 1\nlinux 1\n", 5, "4 primary"),
        ("logical linux 100\n", 1, "extended"),
        ("linux 100\nextended 500\nextended fill\n", 3, "single extended"),
        ("label gpt\nextended fill\n", 2, "GPT"),
        ("label gpt\nlinux fill\nlinux fill\n", 3, "fill"),
        ("label dos\nbios 1MiB\n", 2, "MBR"),
        ("label gpt\ntype7 100\n", 2, "GPT"),
        ("linux 1GiB ext4 /var\nlinux fill ext4 /var\n", 2, "mount point once"),
        ("swap 1GiB /swap\n", 1, "swap"),
        ("swap 1GiB fs=ext4\n", 1, "swap"),
        ("linux 1GiB fs=xfs label=thirteenchars\n", 1, "12 bytes"),
        ("linux 1GiB fs=ext4 uuid=nope\n", 1, "UUID"),
        ("linux 1GiB fs=ext4 mount=var\n", 1, "absolute"),
        ("linux 1GiB mount=/var\n", 1, "filesystem"),
        ("extended fill fs=ext4\n", 1, "extended"),
        ("label zfs\nlinux fill\n", 1, "gpt"),
        ("linux\n", 1, "size"),
        ("logical\n", 1, "type"),
        ("type5 100\n", 1, "type"),
        ("linux 1GiB ext4 ext4\n", 1, "single"),
        ("label dos\nlinux 1GiB boot\nlinux 1GiB boot\n", 3, "bootable"),
        ("# only a comment\n", 1, "partition"),
        ("label dos\nlinux 1GiB name=x\n", 2, "MBR"),
        ("label gpt\nlinux 100%\n", 2, "fill"),
        ("label gpt\nlinux 50%\nlinux 1GiB\nlinux 50%\n", 4, "lines 2, 4 add up to 100%"),
        ("linux 1GiB\nextended fill\nlogical linux 70%\nlogical linux 40%\n", 4, "100%"),
        ("label gpt\nlinux 1GiB name=abcdefghijklmnopqrstuvwxyz0123456789A\n", 2, "36"),
        ("type5 100\n", 1, "extended"),
        ("type0 100\n", 1, "unused"),
    ],
)
def test_layout_errors(text: str, line: int, needle: str) -> None:
    err = _error(text)
    assert err.problems[0].line == line
    assert needle.lower() in (err.problems[0].expected + err.problems[0].hint).lower()


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("label gpt\nlinux 1GiB ext4 /var\nlinux fill ext4 /var\n", 3, 17),
        ("label gpt\nlinux 1GiB ext4 /\nlinux 1GiB ext4 root\n", 3, 17),
        ("label gpt\nlinux 1GiB ext4 mount=/\nlinux 1GiB ext4 mount=/\n", 3, 17),
        ("label gpt\nlinux fill\n  linux fill\n", 3, 9),
        ("label gpt\nlinux 1GiB\n  logical linux 1GiB\n", 3, 3),
        ("label gpt\nlinux 1GiB\n  type7 1GiB\n", 3, 3),
        ("label dos\nlinux 1GiB name=x\n", 2, 12),
        ("label dos\nlinux 1GiB boot\nlinux 1GiB   boot\n", 3, 14),
        ("label dos\nlinux 1\nlinux 1\nlinux 1\nlinux 1\n  swap 1\n", 6, 3),
        ("linux 1\nextended 9\n extended fill\n", 3, 2),
        ("label gpt\nlinux 60%\nlinux 50%\n", 3, 7),
    ],
)
def test_layout_problems_point_at_their_column(text: str, line: int, column: int) -> None:
    p = _error(text).problems[0]
    assert (p.filename, p.line, p.column) == ("layout.desc", line, column)


def test_label_line_alone_is_an_empty_layout() -> None:
    assert parse_desc("label gpt\n") == Layout("gpt", ())


def test_every_example_in_the_documentation_parses_and_plans() -> None:
    from pathlib import Path

    from ka.disk import plan_layout

    doc = Path(__file__).resolve().parents[2] / "docs" / "desc.md"
    blocks = doc.read_text().split("```")[1::2]
    examples = [
        b.strip("\n")
        for b in blocks
        if b.lstrip("\n").startswith(("label", "linux")) and "|" not in b
    ]
    assert len(examples) >= 5
    for text in examples:
        layout = parse_desc(text, "docs/desc.md")
        plan_layout(layout, 512 * GIB)


def test_quoted_values_hold_spaces() -> None:
    text = 'label gpt\nesp 100MiB fs=vfat name="EFI System Partition" label="EFI SYS"  # c\n'
    (esp,) = parse_desc(text).partitions
    assert (esp.name, esp.label) == ("EFI System Partition", "EFI SYS")
    assert 'name="EFI System Partition"' in parse_desc(text).to_desc()
    err = _error('label gpt\nlinux 1GiB fs=ext4 label="open\n')
    assert (err.problems[0].line, err.problems[0].column) == (2, 20)
    assert "closing" in err.problems[0].expected
