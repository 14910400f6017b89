"""What the commands share, declared once: a command made of verbs, the session port, the
session prefix. (The key options are ka.keys', sizes ka.sizes', exit statuses ka.errors'.)"""

from __future__ import annotations

import argparse
from typing import Any

from ka.ports import SESSION_PORT

SESSION_PREFIX = "ka"
Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]


def add_group(subparsers: Subparsers, name: str, **kw: Any
              ) -> tuple[argparse.ArgumentParser, Subparsers]:
    """`ka NAME VERB ...` (ka desc probe, ka pxe serve): alone, NAME prints its help and ends
    with status 2, as every such command does."""
    parser = subparsers.add_parser(name, **kw)
    verbs = parser.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)
    return parser, verbs


def add_port_option(parser: argparse.ArgumentParser | Any, what: str) -> None:
    parser.add_argument("--port", type=int, default=SESSION_PORT, metavar="P",
                        help=f"{what} ({SESSION_PORT})")


def add_session_prefix_option(parser: argparse.ArgumentParser | Any, what: str,
                              default: str | None = SESSION_PREFIX) -> None:
    parser.add_argument("--session-prefix", default=default, metavar="P", help=what)
