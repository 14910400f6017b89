"""Man pages made from the argument parsers (argparse-manpage), so that they never drift from
`--help`: ka(1) with the commands and the README's examples, and one page per command and
sub-command (ka-clone(1), ka-image-capture(1), ...).

`ka man` writes them into PREFIX/share/man/man1 (the venv's or the system's: man finds
them there through MANPATH, or by itself when PREFIX/bin is on PATH).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]

from ka import __version__

SECTION = 1
MANUAL = "ka manual"
WIDTH = 100
# The pages installed with the package: made by `ka man --output man` in the source tree, and a
# test keeps them equal to what the parsers make now (tests/test_manpages.py).
SHIPPED = Path(__file__).resolve().parents[2] / "man"


def _roff(text: str) -> str:
    """Plain text as roff: backslashes and dashes escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.splitlines())


def readme_text() -> str:
    """The README: the package's long description once installed, else the source tree's."""
    try:
        payload = importlib.metadata.metadata("ka").get_payload()  # type: ignore[attr-defined]
    except importlib.metadata.PackageNotFoundError:
        payload = None
    if isinstance(payload, str) and payload.strip():
        return payload
    source = Path(__file__).resolve().parents[2] / "README.md"
    return source.read_text() if source.is_file() else ""


def readme_examples(text: str) -> list[tuple[str, str, list[str]]]:
    """(heading, the line that leads in, lines) for each fenced block of the README that
    runs ka; the lead-in only when it ends with a colon ("On each node:")."""
    out: list[tuple[str, str, list[str]]] = []
    heading = lead = ""
    block: list[str] | None = None
    for line in text.splitlines():
        if block is not None:
            if line.startswith("```"):
                if any(re.match(r"(\.venv/bin/)?ka ", b) for b in block):
                    out.append((heading, lead, block))
                block = None
                lead = ""
            else:
                block.append(line.rstrip())
        elif line.startswith("```"):
            block = []
        elif line.startswith("#"):
            heading, lead = line.lstrip("#").strip(), ""
        elif line.strip():
            lead = line.strip() if line.rstrip().endswith(":") else ""
    return out


def examples_section(examples: list[tuple[str, str, list[str]]]) -> str:
    parts = []
    last = None
    for heading, lead, lines in examples:
        if heading != last:
            parts.append(f".SS {_roff(heading)}" if heading else ".PP")
            last = heading
        if lead:
            parts += [".PP", _roff(lead)]
        parts += [".PP", ".nf", ".RS 4", _roff("\n".join(lines)), ".RE", ".fi"]
    return "\n".join(parts)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each sub-command, in --help order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), p) for name, p in action.choices.items()
                    if helps.get(name) != argparse.SUPPRESS]
    return []


def _page(parser: argparse.ArgumentParser, name: str, summary: str,
          sections: list[tuple[str, str]]) -> str:
    page = Manpage(parser, _data={"project_name": "ka", "version": __version__,
                                  "manual_title": MANUAL, "manual_section": SECTION,
                                  "description": summary})
    page.prog = name  # the page's name: ka-clone, where the synopsis says `ka clone`
    parser._manpage = []  # type: ignore[attr-defined]  # its extra sections live there
    for heading, content in sections:
        page.add_section(heading, "=", content)
    return str(page)


def _overview(root: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """ka's own options without its sub-commands: those get pages of their own."""
    top = argparse.ArgumentParser(prog=root.prog, description=root.description,
                                  add_help=False)
    for action in root._actions:
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            top._add_action(action)
    return top


def _see_also(names: list[str]) -> str:
    return ",\n".join(f".BR {n} ({SECTION})" for n in names)


def pages(root: argparse.ArgumentParser, readme: str | None = None) -> dict[str, str]:
    """File name (ka.1, ka-clone.1, ...) -> the page's roff text, the same on every terminal
    (argparse wraps help to $COLUMNS: the pages are made at a fixed width)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return _pages(root, readme)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _pages(root: argparse.ArgumentParser, readme: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    tree: list[tuple[str, str, argparse.ArgumentParser, str]] = []  # name, help, parser, parent

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for sub, help_text, p in _subcommands(parser):
            tree.append((f"{name}-{sub}", help_text, p, name))
            walk(p, f"{name}-{sub}")

    walk(root, "ka")
    commands = "\n".join(
        f".TP\n.BR {n} ({SECTION})\n{_roff(h)}" for n, h, _, parent in tree if parent == "ka")
    sections = [("commands", commands)]
    examples = readme_examples(readme_text() if readme is None else readme)
    if examples:
        sections.append(("examples", examples_section(examples)))
    sections.append(("see also", _see_also([n for n, _, _, parent in tree if parent == "ka"])))
    out["ka.1"] = _page(_overview(root), "ka", "clone one golden Linux machine onto many",
                        sections)
    for name, help_text, parser, parent in tree:
        children = [n for n, _, _, p in tree if p == name]
        also = _see_also([parent, *children] if parent != "ka" else ["ka", *children])
        out[f"{name}.{SECTION}"] = _page(parser, name, help_text, [("see also", also)])
    return out


def default_directory() -> Path:
    return Path(sys.prefix, "share", "man", f"man{SECTION}")


def write_pages(root: argparse.ArgumentParser, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages(root).items():
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("man", help="write the man pages of ka and its commands",
                       description="Write ka(1) and a page for every command, made from "
                                   "the same parsers as --help, into DIR.")
    m.add_argument("--output", "-o", type=Path, default=None, metavar="DIR",
                   help="where to write them (default: PREFIX/share/man/man1, PREFIX being "
                        "the prefix of the Python that runs ka, a venv's or the system's; man "
                        "finds them there with PREFIX/bin on PATH, or MANPATH=PREFIX/share/man:)")
    m.set_defaults(func=cmd_man)


def cmd_man(args: argparse.Namespace) -> int:
    from ka.cli import build_parser  # the whole tree, of which this command is a part

    for path in write_pages(build_parser(), args.output or default_directory()):
        print(path)
    return 0
