"""The messages of a node's status service (ka.clone.status: `ka console`, the dashboard).

A protocol of its own, in its own catalogue STATUS (ka.transport.codec), over a channel under a
key derived for the service only: a status message is never taken for a control one, nor the
other way round. docs/transport.md lists them; tests/transport/test_messages.py keeps it in
step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka.transport.codec import Catalogue, Message

STATUS = Catalogue("status")
NODE, CONSOLE = "node -> console", "console -> node"


@STATUS.kind("hello", NODE)
@dataclass(frozen=True)
class Hello(Message):
    """First message of a status connection: the node's name, its current step, and whether
    it runs commands for a console (`--allow-exec`)."""

    node: str
    step: str
    exec: bool


@STATUS.kind("log", NODE)
@dataclass(frozen=True)
class LogLine(Message):
    """One line of the node's log (its backlog first), and the step it was logged in."""

    line: str
    step: str


@STATUS.kind("bye", NODE)
@dataclass(frozen=True)
class Bye(Message):
    """The install has ended: the log is complete."""


@STATUS.kind("exec", CONSOLE)
@dataclass(frozen=True)
class Exec(Message):
    """Run this command on the node (needs the key and `--allow-exec` there)."""

    argv: tuple[str, ...]


@STATUS.kind("exec-result", NODE)
@dataclass(frozen=True)
class ExecResult(Message):
    """The command's exit status and the tails of its output, or why it was not run."""

    status: int | None
    stdout: str = ""
    stderr: str = ""
    refused: str | None = None


reference = STATUS.reference  # the table in docs/transport.md
