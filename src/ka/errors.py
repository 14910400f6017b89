"""The project's error types.

Every layer below the CLI raises a `KaError` (or a subclass) that says what failed, where
(`node`), and what to do (`hint`). Only `ka.cli` formats errors and chooses exit codes.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class ExitStatus:
    meaning: str
    # The commands that may end with it ("image" covers every `ka image` verb); (): all.
    commands: tuple[str, ...] = ()


# The single source of ka's exit statuses: each error class's `exit_code` is one of them,
# every command's --help lists those it may end with, and README.md's table is checked
# against this one.
EXIT_STATUSES: dict[int, ExitStatus] = {
    0: ExitStatus("success"),
    1: ExitStatus("failure: a node, a command ka ran or a session failed (the message says "
                  "which)"),
    2: ExitStatus("usage: a bad option, argument or input file"),
    3: ExitStatus("the layout does not fit the disk", ("desc check", "desc apply", "install")),
    4: ExitStatus("the disk is in use: mounted, active swap, the running root",
                  ("desc apply", "install")),
    5: ExitStatus("preflight: this machine lacks what the role needs (ka doctor says what)",
                  ("doctor", "clone", "pxe serve")),
    10: ExitStatus("sender not found", ("receive", "install")),
    11: ExitStatus("rejected by the sender: wrong key, late, duplicate", ("receive", "install")),
    12: ExitStatus("digest mismatch: the copy differs from what was sent",
                   ("receive", "install")),
    13: ExitStatus("stream cut: the sender was lost, went silent or evicted us",
                   ("receive", "install")),
    14: ExitStatus("consumer failed: the command fed the stream failed or stopped reading",
                   ("receive",)),
    15: ExitStatus("the node's status service refused or could not be reached", ("console",)),
    20: ExitStatus("a clone plan this ka cannot read (another version)",
                   ("install", "clone", "image")),
    21: ExitStatus("no local disk for a golden disk: missing, too small or in use",
                   ("install",)),
    22: ExitStatus("the bootloader could not be installed in the clone", ("install",)),
    30: ExitStatus("image not found", ("image", "clone")),
    31: ExitStatus("not an image of a format this ka reads", ("image", "clone")),
    32: ExitStatus("image corrupt: a stream file's size or digest is wrong", ("image", "clone")),
    33: ExitStatus("image not authenticated by the key", ("image", "clone")),
    34: ExitStatus("the capture failed", ("image capture",)),
    35: ExitStatus("image store not found", ("image", "clone")),
    130: ExitStatus("interrupted (Ctrl-C, SIGTERM)"),
}
EXIT_HEADING = "exit status:"


def exit_statuses_of(command: str) -> dict[int, ExitStatus]:
    """The statuses `ka COMMAND` may end with (a group, "image", gets those of its verbs;
    "", ka itself, all)."""
    def covers(name: str) -> bool:
        return (name == command or command.startswith(name + " ")
                or name.startswith(command + " "))

    return {code: s for code, s in EXIT_STATUSES.items()
            if not command or not s.commands or any(covers(name) for name in s.commands)}


def exit_statuses_text(command: str) -> str:
    lines = [f"  {code:<4} {s.meaning}" for code, s in exit_statuses_of(command).items()]
    return "\n".join([EXIT_HEADING, *lines])

# Lines a tool writes before the real cause, after it or beside it, that say nothing of it:
# a version banner (mke2fs), tar's epilogue, its "child returned" echo of a filter's failure,
# and its harmless warnings.
_NOT_A_CAUSE = re.compile(
    r"^[\w.-]+ v?\d+(\.\d+)+( \(.*\))?$"
    r"|Exiting with failure status due to previous errors"
    r"|Error is not recoverable: exiting now"
    r"|Child returned status \d+"
    r"|Removing leading .* from (member|hard link target) names"
    r"|Ignoring unknown extended header keyword"
    r"|time stamp .* is .* in the future"
)


def first_error_line(said: str) -> str:
    """The line of a failed tool's output that names the cause: its first line that is not
    an epilogue or a warning (tar: `Cannot write: No space left on device`, not `Exiting
    with failure status due to previous errors`); the last line when every line is such."""
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return next((line for line in lines if not _NOT_A_CAUSE.search(line)),
                lines[-1] if lines else "")


class KaError(Exception):
    """Base of every error ka raises on purpose.

    `exit_code` is the process exit status the CLI uses for this error.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, node: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.node = node

    def __str__(self) -> str:
        where = f"[{self.node}] " if self.node else ""
        return f"{where}{self.message}"


class UsageError(KaError):
    """Bad input from the user: a bad option value, a malformed file."""

    exit_code = 2


class CommandError(KaError):
    """An external command failed; carries the argv, its status and the tail of what it said:
    its stderr, or its stdout when its stderr is empty (mkfs.jfs, for one, explains its
    refusals on stdout only)."""

    def __init__(
        self,
        argv: list[str],
        returncode: int,
        stderr: str = "",
        *,
        stdout: str = "",
        hint: str | None = None,
        node: str | None = None,
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        said = stderr if stderr.strip() else stdout
        # The line that names the cause, for a one-line reason (the message keeps the tail):
        # stderr's first error; on stdout, errors come after the progress, so its last line.
        self.cause = (first_error_line(stderr) if stderr.strip()
                      else (stdout.strip().splitlines() or [""])[-1])
        tail = "\n".join(said.strip().splitlines()[-10:])
        message = f"command failed with status {returncode}: {shlex.join(argv)}"
        if tail:
            message += f"\n{tail}"
        super().__init__(message, hint=hint, node=node)


class ToolMissingError(KaError):
    """A required program is not installed; says which package provides it."""

    def __init__(self, tool: str, package: str | None = None) -> None:
        hint = f"install the Debian package '{package}'" if package else None
        super().__init__(f"required program '{tool}' was not found in PATH", hint=hint)
        self.tool = tool
        self.package = package
