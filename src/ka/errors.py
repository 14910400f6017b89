"""The project's error types.

Every layer below the CLI raises a `KaError` (or a subclass) that says what failed, where
(`node`), and what to do (`hint`). Only `ka.cli` formats errors and chooses exit codes.
"""

from __future__ import annotations

import shlex


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
