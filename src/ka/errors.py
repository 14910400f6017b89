"""The project's error types.

Every layer below the CLI raises a `KaError` (or a subclass) that says what failed, where
(`node`), and what to do (`hint`). Only `ka.cli` formats errors and chooses exit codes.
"""

from __future__ import annotations

import re
import shlex

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
