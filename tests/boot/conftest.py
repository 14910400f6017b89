"""Run `ka pxe` / `ka bootenv` through this layer's own parser, with the CLI's error handling.

The layer's sub-commands are registered on a parser of their own so that these tests do not
depend on the other layers' command-line modules.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from ka.boot import cli as boot_cli
from ka.errors import KaError


def run_boot_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ka")
    boot_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KaError as e:
        print(f"ka: error: {e}")
        if e.hint:
            print(f"ka: hint: {e.hint}")
        return e.exit_code


@pytest.fixture
def ka_boot() -> Callable[[list[str]], int]:
    return run_boot_cli
