"""Errors of the disk layer."""

from __future__ import annotations

from dataclasses import dataclass

from ka.errors import KaError, UsageError


@dataclass(frozen=True)
class DescProblem:
    """One wrong place in a desc file."""

    filename: str
    line: int
    column: int
    found: str
    expected: str
    hint: str

    def __str__(self) -> str:
        return (
            f"{self.filename}:{self.line}:{self.column}: expected {self.expected}, "
            f"found '{self.found}'\n  hint: {self.hint}"
        )


class DescError(UsageError):
    """A desc file is wrong; lists every wrong line so that all can be fixed at once."""

    def __init__(self, problems: tuple[DescProblem, ...]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(
            "\n".join(str(p) for p in problems),
            hint=f"nothing was applied; fix {first.filename} (see docs/desc.md)",
        )


class DoesNotFit(KaError):
    """A layout does not fit the disk; raised before anything touches the disk."""

    exit_code = 3


class DiskBusy(KaError):
    """The disk holds a mounted filesystem, active swap, the running root, or a holder."""

    exit_code = 4
