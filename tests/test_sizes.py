"""One reader of sizes (ka.sizes): units explicit, a plain number MiB, MB and GB refused, the
same in a desc and for every size option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ka.cli import main
from ka.disk.layout import Size
from ka.disk.layout import parse_size as desc_size
from ka.lab.clone_cli import register as lab
from ka.sizes import GIB, KIB, MIB, TIB, SizeError, format_size, parse_size
from ka.transport.cli import register as transport

UNITS = {"B": 1, "K": KIB, "KiB": KIB, "k": KIB, "kib": KIB, "M": MIB, "MiB": MIB, "m": MIB,
         "G": GIB, "GiB": GIB, "g": GIB, "T": TIB, "TiB": TIB, "": MIB}


@given(st.integers(0, 1 << 50), st.sampled_from(sorted(UNITS)))
def test_a_number_and_a_unit(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * UNITS[unit]


@given(st.integers(1, 1 << 60))
def test_what_format_writes_reads_back(n: int) -> None:
    text = format_size(n)
    assert parse_size(text) == n
    assert desc_size(text) == Size.of_bytes(n)


@given(st.integers(0, 1 << 30), st.sampled_from(["KB", "MB", "GB", "TB", "kB", "mb", "Gb"]))
def test_units_of_1000_or_1024_are_refused_with_the_two_spellings(n: int, unit: str) -> None:
    with pytest.raises(SizeError, match="may mean powers of 1000 or of 1024; write") as e:
        parse_size(f"{n}{unit}")
    assert f"{n}{unit[0].upper()}iB" in str(e.value)


@pytest.mark.parametrize(("text", "size"), [
    ("1.5GiB", 3 * GIB // 2), ("0.5K", 512), (" 64M ", 64 * MIB), ("3500", 3500 * MIB)])
def test_fractions_that_give_whole_bytes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "why"), [
    ("0.3B", "not a whole number of bytes"), ("12XiB", "unknown unit"), ("", "not a size"),
    ("-5M", "not a size"), ("1e6", "not a size"), ("5 MiB of it", "not a size")])
def test_what_is_not_a_size_says_why(text: str, why: str) -> None:
    with pytest.raises(SizeError, match=why):
        parse_size(text)


def test_every_size_option_reads_sizes_alike(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    transport(sub)
    lab(sub)
    send = ["send", "--nodes", "1", "--input", "/dev/null"]
    for value, size in (("64", 64 * MIB), ("64MiB", 64 * MIB), ("1G", GIB)):
        assert parser.parse_args([*send, "--ring-size", value]).ring_size == size
        assert parser.parse_args(["clone", "--size", value]).size == size
        assert parser.parse_args(["clone", "--data", value]).data == size
    for option in (["--ring-size"], ["--chunk-size"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*send, *option, "64MB"])
        err = capsys.readouterr().err
        assert "'64MB': MB may mean powers of 1000 or of 1024; write 64MiB" in err
    # And the desc, and ka desc check --size: a plain number is MiB there too.
    assert desc_size("64") == Size.of_bytes(64 * MIB)
    desc = tmp_path / "layout.desc"
    desc.write_text("label gpt\nlinux 100 fs=ext4 mount=/\n")
    assert main(["desc", "check", str(desc), "--size", "64MB"]) == 2
    assert main(["desc", "check", str(desc), "--size", "200"]) == 0
    assert main(["desc", "check", str(desc), "--size", "100"]) == 3  # 100 MiB + the GPT
