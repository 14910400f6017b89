"""Shell completion (argcomplete) for bash and zsh: commands and options from the parsers,
and the names ka can list: session prefixes (those with reports in the logs directory),
lab names (the lab state) and image names (the image store).

The shell runs `ka` itself with argcomplete's variables set; `autocomplete` then answers and
exits before anything else runs. `ka completion bash|zsh` prints the shell code to enable it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ka.clone.deploy import DEFAULT_LOGS
from ka.image.store import DEFAULT_STORE

Completer = Callable[..., list[str]]


def session_prefixes(parsed_args: argparse.Namespace | None = None, **_: Any) -> list[str]:
    """The prefixes of earlier clones (their reports' directories), and the default one."""
    logs = Path(getattr(parsed_args, "logs", None) or DEFAULT_LOGS)
    try:
        found = sorted(p.name for p in logs.iterdir() if p.is_dir() and not
                       p.name.startswith("."))
    except OSError:
        found = []
    return found if "ka" in found else ["ka", *found]


def lab_names(**_: Any) -> list[str]:
    from ka.lab.state import recorded

    return recorded()


def image_names(parsed_args: argparse.Namespace | None = None, **_: Any) -> list[str]:
    from ka.image.manifest import ImageError
    from ka.image.store import list_images

    store = getattr(parsed_args, "store", None) or DEFAULT_STORE
    try:
        return [listed.path.name for listed in list_images(store)]
    except (ImageError, OSError):
        return []


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def completer_for(prog: str, action: argparse.Action) -> Completer | None:
    """Which names complete this argument of the command `prog` (None: argcomplete's own)."""
    if action.dest == "session_prefix":
        return session_prefixes
    if action.dest == "name" and prog.startswith("ka lab"):
        return lab_names
    if action.dest == "image" and action.metavar == "DIR|NAME":
        return image_names
    return None


def attach(parser: argparse.ArgumentParser) -> None:
    """Set the completers of every argument that names something ka can list."""
    from argcomplete.completers import DirectoriesCompleter, FilesCompleter

    for p in _parsers(parser):
        for action in p._actions:
            completer: Any = completer_for(p.prog, action)
            if completer is None and action.dest in ("key_file", "desc", "hostnames",
                                                        "identity", "golden_key"):
                completer = FilesCompleter()
            if completer is None and action.dest in ("store", "logs", "root", "target"):
                completer = DirectoriesCompleter()
            if completer is not None:
                action.completer = completer  # type: ignore[attr-defined]


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell and exit when run for completion; do nothing otherwise (and import
    nothing: every other run of ka stays as fast)."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    attach(parser)
    argcomplete.autocomplete(parser)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser(
        "completion", help="print the shell code that completes ka's commands",
        description="Print the shell code of ka's completion. Enable it with "
                    "eval \"$(ka completion bash)\" in ~/.bashrc, or "
                    "eval \"$(ka completion zsh)\" in ~/.zshrc (after compinit).")
    c.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    c.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["ka"], shell=args.shell), end="")
    return 0
