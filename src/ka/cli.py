"""ka's command line: the only place that prints errors and chooses exit codes.

Each layer contributes its sub-commands from its own `cli` module through
`register(subparsers)`; a sub-command sets `func(args) -> int` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ka import __version__, completion
from ka.errors import KaError

# Order is the order of `ka --help`.
LAYER_CLIS = (
    "ka.keys",
    "ka.transport.cli",
    "ka.disk.cli",
    "ka.clone.cli",
    "ka.image.cli",
    "ka.boot.cli",
    "ka.lab.cli",
    "ka.web.cli",
    "ka.doctor.cli",
    "ka.manpages",
    "ka.completion",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ka",
        description=(
            "Clone one golden Linux machine onto many machines at once. The golden node "
            "streams its filesystems through a TCP chain of nodes, each writing and "
            "forwarding at once, so the time stays flat as the number of nodes grows."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ka {__version__}")
    parser.add_argument("--debug", action="store_true", help="log every command ka runs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in LAYER_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    completion.autocomplete(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KaError as e:
        print(f"ka: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"ka: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ka: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
