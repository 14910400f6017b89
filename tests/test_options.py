"""What the commands share is declared once: the ports (ka.ports), the port and session-prefix
options and the commands made of verbs (ka.options), the key file's path (ka.keys)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ka.cli import build_parser, main
from ka.keys import KEY_ENV, key_file_path
from ka.ports import SESSION_PORT, STAGE2_PORT, STATUS_PORT

SRC = Path(__file__).resolve().parents[1] / "src" / "ka"


def test_each_port_number_is_written_once() -> None:
    for port in (SESSION_PORT, STAGE2_PORT, STATUS_PORT):
        # As a value: the number alone, not inside a comment or a docstring's example.
        found = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(rf"(=|:)\s*{port}\b", line.split("#")[0]) and '"' not in line]
        assert found == [f"ports.py:{n}" for n in _lines_of(port)], found


def _lines_of(port: int) -> list[int]:
    text = (SRC / "ports.py").read_text().splitlines()
    return [i for i, line in enumerate(text, 1) if re.search(rf"= {port}\b", line)]


@pytest.mark.parametrize("command", [["send", "--nodes", "1", "--input", "x"],
                                     ["receive", "--session", "s", "--output", "x"],
                                     ["clone"], ["install"], ["doctor"]])
def test_every_port_option_has_the_session_port(command: list[str]) -> None:
    assert build_parser().parse_args(command).port == SESSION_PORT


@pytest.mark.parametrize("group", ["desc", "pxe", "bootenv", "lab", "image"])
def test_a_command_of_verbs_alone_prints_its_help(group: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main([group]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ka {group} [-h] {group.upper()}_COMMAND ...")


def test_the_key_file_is_the_option_else_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert key_file_path(None) is None
    monkeypatch.setenv(KEY_ENV, "/env/key")
    assert key_file_path(None) == "/env/key"
    assert key_file_path("/given/key") == "/given/key"
    monkeypatch.setenv(KEY_ENV, "")
    assert key_file_path(None) is None
