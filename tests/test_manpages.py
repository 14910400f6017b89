"""Man pages made from the parsers: one per command and sub-command, `man -l` renders
ka-clone(1) with every option of `ka clone`, ka(1) carries the README's examples, and after
`ka man` in a venv `man ka-clone` finds the page by itself."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ka.cli import build_parser
from ka.manpages import SHIPPED, _subcommands, pages, readme_examples, readme_text
from needs import need

needs_man = pytest.mark.usefixtures("man")


@pytest.fixture
def man() -> None:
    need("man", "man-db")


def render(path: Path) -> str:
    env = dict(os.environ, LC_ALL="C", MANWIDTH="200", MAN_KEEP_FORMATTING="")
    result = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())  # justified lines: runs of spaces


def every_command(parser: argparse.ArgumentParser,
                  name: str = "ka") -> dict[str, argparse.ArgumentParser]:
    out = {}
    for sub, _, p in _subcommands(parser):
        out[f"{name}-{sub}"] = p
        out |= every_command(p, f"{name}-{sub}")
    return out


def test_a_page_for_ka_and_every_command() -> None:
    root = build_parser()
    made = pages(root, readme="")
    expected = {"ka.1"} | {f"{n}.1" for n in every_command(root)}
    assert set(made) == expected
    assert {"ka-clone.1", "ka-install.1", "ka-image-capture.1", "ka-image-list.1",
            "ka-doctor.1", "ka-pxe-serve.1", "ka-lab-up.1"} <= expected
    for name, text in made.items():
        assert text.startswith(f'.TH {name[:-2].upper().replace("-", chr(92) + "-")} "1"')


@needs_man
def test_ka_clone_renders_with_its_options(tmp_path: Path) -> None:
    clone = every_command(build_parser())["ka-clone"]
    page = tmp_path / "ka-clone.1"
    page.write_text(pages(build_parser(), readme="")["ka-clone.1"])
    text = render(page)
    assert "ka-clone - clone this (golden) machine" in text
    assert "SYNOPSIS" in text and "ka clone" in text
    for action in clone._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert option in text, f"{option} is not in ka-clone(1)"
    assert "number of nodes" in text  # the help of --nodes
    assert "SEE ALSO" in text and "ka(1)" in text


@needs_man
def test_ka_1_lists_the_commands_and_the_readme_examples(tmp_path: Path) -> None:
    page = tmp_path / "ka.1"
    page.write_text(pages(build_parser())["ka.1"])
    text = render(page)
    assert "ka-clone(1)" in text and "ka-doctor(1)" in text
    assert "EXAMPLES" in text
    for _, _, lines in readme_examples(readme_text()):
        for line in lines:
            assert " ".join(line.split("#")[0].split()) in text


def test_readme_examples() -> None:
    text = ("# ka\n```\nbash scripts/setup.sh\n```\n### A clone\nOn the golden node:\n\n"
            "```\nka clone --nodes 4\n```\nThen on each node:\n```\nka install\n```\n")
    assert readme_examples(text) == [("A clone", "On the golden node:", ["ka clone --nodes 4"]),
                                     ("A clone", "Then on each node:", ["ka install"])]
    assert readme_examples(readme_text()), "the README has no example of ka"


@needs_man
@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="not in a venv: would write to "
                    "the system's man directory")
def test_man_finds_the_pages_of_the_venv_after_ka_man() -> None:
    bin_dir = Path(sys.prefix, "bin")
    result = subprocess.run([str(bin_dir / "ka"), "man"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert str(Path(sys.prefix, "share", "man", "man1", "ka-clone.1")) in result.stdout
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env |= {"PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C",
            "MANWIDTH": "200"}
    shown = subprocess.run(["man", "ka-clone"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "--session-prefix" in shown.stdout


def test_ka_man_writes_into_a_directory(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ka", "man", "--output", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ka.1").is_file() and (tmp_path / "ka-image-verify.1").is_file()
    assert not list(tmp_path.glob(".*"))


def _undated(text: str) -> str:
    """A page without the date of its .TH line (the day it was made)."""
    head, _, rest = text.partition("\n")
    fields = head.split('"')
    if len(fields) > 3:
        fields[3] = "DATE"
    return '"'.join(fields) + "\n" + rest


def test_the_shipped_pages_are_what_the_parsers_make_now() -> None:
    made = pages(build_parser())
    shipped = {p.name: p.read_text() for p in sorted(SHIPPED.glob("*.1"))}
    hint = "after changing a command's options or help: .venv/bin/ka man --output man"
    assert sorted(shipped) == sorted(made), hint
    for name, text in made.items():
        assert _undated(shipped[name]) == _undated(text), f"man/{name} differs: {hint}"


def test_pages_do_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = pages(build_parser())
    monkeypatch.setenv("COLUMNS", "250")
    assert pages(build_parser()) == narrow
    assert os.environ["COLUMNS"] == "250"  # put back as it was


@pytest.mark.slow
@needs_man
def test_the_package_installs_its_man_pages(tmp_path: Path) -> None:
    # The wheel that `pip install` makes carries the pages into PREFIX/share/man/man1.
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                             str(tmp_path), str(root)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("ka-*.whl")
    prefix = f"ka-{wheel.name.split('-')[1]}.data/data/share/man/man1/"
    with zipfile.ZipFile(wheel) as z:
        names = {n.removeprefix(prefix) for n in z.namelist() if n.startswith(prefix)}
        assert names == set(pages(build_parser()))
        (tmp_path / "ka-clone.1").write_bytes(z.read(prefix + "ka-clone.1"))
    text = render(tmp_path / "ka-clone.1")
    assert "ka-clone" in text and "--nodes" in text
