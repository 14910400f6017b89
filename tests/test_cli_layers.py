"""`ka COMMAND` builds only its own layer's parser: the table of commands per layer module
must say exactly what each module registers, and the whole parser stays for everything else."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from ka.cli import LAYER_COMMANDS, _only, build_parser


def test_the_table_says_what_each_module_registers() -> None:
    for name, commands in LAYER_COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(name).register(sub)
        assert tuple(sub.choices) == commands, name


def test_one_command_builds_one_layer_and_anything_else_builds_all() -> None:
    assert _only(["receive", "--session", "x"]) == ("ka.transport.cli",)
    assert _only(["install"]) == ("ka.clone.cli",)
    every = tuple(name for name, _c in LAYER_COMMANDS)
    assert _only([]) == every and _only(["--debug", "send"]) == every
    assert _only(["nonsense"]) == every
    sub = next(a for a in build_parser(_only(["image", "list"]))._actions
               if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == ["image"]


def test_a_node_command_does_not_import_the_other_layers() -> None:
    code = ("import sys; from ka.cli import main\n"
            "try:\n    main(['receive', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('ka.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split("\n")[-2].split()
    assert "ka.transport.cli" in out
    # nor the sender's side of its own layer (the receiver itself is imported once it runs)
    for other in ("ka.transport.sender", "ka.transport.session", "ka.lab.clone", "ka.web.cli",
                  "ka.clone.deploy", "ka.boot.bootenv", "ka.doctor.cli", "ka.image.cli"):
        assert other not in out
