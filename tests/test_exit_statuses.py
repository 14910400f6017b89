"""One table of exit statuses (ka.errors.EXIT_STATUSES): every error's status is in it, every
command's --help lists the statuses it may end with, and README.md's table is the same."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
from pathlib import Path

import ka
from ka.cli import build_parser
from ka.errors import EXIT_STATUSES, KaError, exit_statuses_of

README = Path(__file__).resolve().parents[1] / "README.md"


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_error_ends_with_a_status_of_the_table() -> None:
    for info in pkgutil.walk_packages(ka.__path__, "ka."):
        if not info.name.endswith("__main__"):  # it runs ka
            importlib.import_module(info.name)
    errors = _subclasses(KaError) | {KaError}
    assert len(errors) > 20
    unknown = {f"{e.__module__}.{e.__qualname__}": e.exit_code for e in errors
               if e.exit_code not in EXIT_STATUSES}
    assert not unknown


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


def test_every_commands_help_ends_with_its_exit_statuses() -> None:
    helps = {" ".join(path): parser.format_help() for path, parser in _commands(build_parser())}
    assert len(helps) > 30
    for command, text in helps.items():
        table = text[text.index("exit status:"):].splitlines()[1:]
        codes = [int(line.split()[0]) for line in table if re.match(r"  \d+ ", line)]
        assert codes == sorted(exit_statuses_of(command)), command
        assert {0, 1, 2, 130} <= set(codes)
    assert "\n  5    preflight: this machine lacks what the role needs" in helps["clone"]
    assert [c for c in range(10, 15) if f"\n  {c}   " in helps["receive"]] == [10, 11, 12, 13, 14]
    assert "\n  14   " not in helps["install"] and "\n  21   " in helps["install"]
    assert "\n  34   " in helps["image capture"] and "\n  34   " not in helps["image info"]
    assert "\n  34   " in helps["image"]  # a group: the statuses of its verbs
    # Wrapped text stays wrapped; the table is kept line by line.
    assert "exit status:\n  0    success\n" in helps["desc probe"]


def _readme_table() -> dict[int, tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("### Exit statuses"):]
    section = section[:section.index("\n## ")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1], cells[2])
    return rows


def test_the_readme_table_is_the_table() -> None:
    expected = {code: (s.meaning, ", ".join(f"ka {c}" for c in s.commands) or "every command")
                for code, s in EXIT_STATUSES.items()}
    assert _readme_table() == expected

