"""ka's command line: the only place that prints errors and chooses exit codes.

Each layer contributes its sub-commands from its own `cli` module through
`register(subparsers)`; a sub-command sets `func(args) -> int` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ka import __version__
from ka.errors import EXIT_HEADING, KaError, exit_statuses_text

# Order is the order of `ka --help`; each module with the commands it registers (checked by
# a test against the parsers), so that running one command imports only its own layer: every
# node starts `ka` for each session, and the imports of the other layers are paid in CPU.
LAYER_COMMANDS = (
    ("ka.keys", ("keygen",)),
    ("ka.transport.cli", ("send", "receive")),
    ("ka.disk.cli", ("desc",)),
    ("ka.clone.cli", ("clone", "install", "console")),
    ("ka.image.cli", ("image",)),
    ("ka.boot.cli", ("pxe", "bootenv")),
    ("ka.lab.cli", ("lab",)),
    ("ka.web.cli", ("web",)),
    ("ka.doctor.cli", ("doctor",)),
    ("ka.manpages", ("man",)),
    ("ka.completion", ("completion",)),
)
LAYER_CLIS = tuple(name for name, _commands in LAYER_COMMANDS)


def _only(argv: Sequence[str]) -> tuple[str, ...]:
    """The one layer module that `argv` runs a command of, when that is plain to see (the
    first argument is a command: no option before it, no completion asked); else all."""
    if argv and not os.environ.get("_ARGCOMPLETE"):
        for name, commands in LAYER_COMMANDS:
            if argv[0] in commands:
                return (name,)
    return LAYER_CLIS


def build_parser(modules: Sequence[str] = LAYER_CLIS) -> argparse.ArgumentParser:
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
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    _name_exit_statuses(parser)
    return parser


class _ExitStatusesKept(argparse.HelpFormatter):
    """Wraps the epilog's paragraphs as its base class does, but keeps the table of exit
    statuses as it is written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        head, heading, table = text.partition(EXIT_HEADING)
        filled = super()._fill_text(head, width, indent) if head.strip() else ""
        if not heading:
            return filled
        return (filled + "\n\n" if filled else "") + indent + heading + table


def _name_exit_statuses(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
                        seen: set[int] | None = None) -> None:
    """Every command's --help (and man page) ends with the exit statuses it may end with,
    from the one table in ka.errors."""
    seen = set() if seen is None else seen
    if id(parser) in seen:  # an alias
        return
    seen.add(id(parser))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _name_exit_statuses(child, (*path, name), seen)
    table = exit_statuses_text(" ".join(path))
    parser.epilog = f"{parser.epilog.rstrip()}\n\n{table}" if parser.epilog else table
    formatter = parser.formatter_class
    if isinstance(formatter, type) and not issubclass(formatter, (
            argparse.RawDescriptionHelpFormatter, _ExitStatusesKept)):
        kept: Any = type(f"{formatter.__name__}ExitStatusesKept", (_ExitStatusesKept, formatter),
                         {})
        parser.formatter_class = kept


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_only(sys.argv[1:] if argv is None else argv))
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer and exit
        from ka import completion

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
